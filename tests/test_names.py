"""Names the package, the schema and the workflow share are defined once (the YAML schema
cannot import them, so these tests hold it to the package's constants)."""

from __future__ import annotations

import re

from loclens.config import schema
from loclens.evaluate import grid
from loclens.plan import MASK_CACHE, MASK_CACHE_GLOB, mask_cache_name
from loclens.schema import SEGMENTERS


def test_the_schema_names_the_packages_segmenters_lens_sources_and_losses():
    sch = schema()
    assert set(SEGMENTERS) <= set(sch["properties"]["segment"]["properties"])
    assert sch["$defs"]["lens_sources"]["items"]["enum"] == list(grid.LENS_SOURCES)
    assert sch["$defs"]["phase1_loss"]["enum"] == list(grid.PHASE1_LOSSES)


def test_the_training_losses_are_the_grids_phase1_losses():
    from loclens.train.losses import LOSSES

    assert tuple(LOSSES) == grid.PHASE1_LOSSES


def test_every_cell_folder_matches_the_workflows_wildcard_patterns_and_reads_back():
    patterns = {k: re.compile(v) for k, v in grid.wildcard_patterns().items()}
    cells = list(grid.PAPER_TABLE3) + [grid.make_cell(("medsam", "sam"), "dcl", True)]
    for cell in cells:
        wildcards = {**cell.wildcards, "seed": "3"}
        assert all(patterns[k].fullmatch(v) for k, v in wildcards.items()), wildcards
        assert grid.cell_from_wildcards(wildcards) == cell
        assert grid.RUN_FOLDER.format(**wildcards) == f"{cell.name}/seed-3"
    assert not patterns["lens"].fullmatch("sam+bogus")
    assert not patterns["loss"].fullmatch("mse")


def test_mask_cache_names():
    assert mask_cache_name(3) == "shard-00003.parquet" == MASK_CACHE.format(shard="00003")
    assert MASK_CACHE_GLOB == "shard-*.parquet"
