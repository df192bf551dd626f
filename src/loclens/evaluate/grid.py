"""The models to train and compare: the paper's Table 3 grid, and the pair of Tables 1 and 2.

A *cell* fixes the three ablated settings; each cell is trained once per seed:

- ``lens``: the lens sources whose views phase 1 may draw (``sam``, ``medsam``, ``expert``), or
  ``none``: original images only (no lens);
- ``phase1_loss``: ``dcl`` (the paper's method) or ``infonce``;
- ``pixel_shuffle``: ``on`` (the paper's method) or ``off``.

The paper's Table 3 calls the lens sources SAM, MedSAM and Mask. "Mask" is the expert
segmentation ("expert-validated representations"), which loclens renders as the ``masked`` view:
from the dataset's expert masks where it has them (SLAKE), otherwise from the first segmenter of
``render.masked_from`` with masks (each row's provenance says which). Here it is ``expert``.

Tables 1 and 2 compare two cells: ``evaluate.main`` (the lens model) and ``evaluate.baseline``
(the same VLM fine-tuned on original images only). Both are always trained, whatever the grid.

Cell names are the workflow's wildcards (``lens-medsam+sam/p1-dcl/shuffle-on``), so adding a
cell or a seed to the config adds jobs and nothing else reruns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..schema import BLEND_KINDS, MASK_SOURCES, MASKED_VIEW, SEGMENTERS, SOURCE_LABELS

#: Lens sources in canonical order (a cell's name lists them in this order).
LENS_SOURCES = SEGMENTERS + ("expert",)
assert set(LENS_SOURCES) == set(MASK_SOURCES)
#: How the paper's tables name each lens source.
LENS_LABELS = SOURCE_LABELS
NO_LENS = "none"
PHASE1_LOSSES = ("dcl", "infonce")
SHUFFLE = {True: "on", False: "off"}
#: A cell's folder (its name, made of the workflow's wildcards) and one trained run of it.
CELL_FOLDER = "lens-{lens}/p1-{loss}/shuffle-{shuffle}"
RUN_FOLDER = CELL_FOLDER + "/seed-{seed}"
#: Grid modes: the paper's Table 3, an explicit list of cells, one setting of ``main`` varied at a
#: time, or every combination of the listed values.
GRID_MODES = ("paper", "cells", "one_at_a_time", "product")


@dataclass(frozen=True)
class Cell:
    lens: tuple[str, ...]  # canonical order; empty = original images only
    phase1_loss: str
    pixel_shuffle: bool

    @property
    def lens_name(self) -> str:
        return "+".join(self.lens) or NO_LENS

    @property
    def wildcards(self) -> dict[str, str]:
        return {"lens": self.lens_name, "loss": self.phase1_loss, "shuffle": SHUFFLE[self.pixel_shuffle]}

    @property
    def name(self) -> str:
        return CELL_FOLDER.format(**self.wildcards)

    def settings(self) -> dict:
        return {"lens": self.lens_name, "phase1_loss": self.phase1_loss, "pixel_shuffle": SHUFFLE[self.pixel_shuffle]}


def make_cell(lens, phase1_loss: str, pixel_shuffle) -> Cell:
    """A cell from config values or wildcards; raise ValueError naming a bad value."""
    if isinstance(lens, str):
        lens = [] if lens == NO_LENS else lens.split("+")
    unknown = [s for s in lens if s not in LENS_SOURCES]
    if unknown:
        raise ValueError(f"unknown lens source(s) {unknown}; choose from {list(LENS_SOURCES)} or {NO_LENS!r}")
    if phase1_loss not in PHASE1_LOSSES:
        raise ValueError(f"unknown phase-1 loss {phase1_loss!r}; choose from {list(PHASE1_LOSSES)}")
    if isinstance(pixel_shuffle, str):
        if pixel_shuffle not in ("on", "off"):
            raise ValueError(f"pixel shuffle must be on or off, got {pixel_shuffle!r}")
        pixel_shuffle = pixel_shuffle == "on"
    return Cell(tuple(s for s in LENS_SOURCES if s in set(lens)), phase1_loss, bool(pixel_shuffle))


def wildcard_patterns() -> dict[str, str]:
    """Regular expressions of the run folder's wildcards (the workflow's constraints)."""
    source = "|".join(LENS_SOURCES)
    return {
        "lens": rf"{NO_LENS}|({source})(\+({source}))*",
        "loss": "|".join(PHASE1_LOSSES),
        "shuffle": "|".join(SHUFFLE.values()),
        "seed": "[0-9]+",
    }


def cell_from_wildcards(wildcards) -> Cell:
    return make_cell(wildcards["lens"], wildcards["loss"], wildcards["shuffle"])


def cell_from_config(entry: dict) -> Cell:
    """A cell from a config mapping {lens, phase1_loss, pixel_shuffle}."""
    return make_cell(entry["lens"], entry["phase1_loss"], entry["pixel_shuffle"])


#: The paper's Table 3 (SmolVLM ablation), row by row: the no-lens baseline (InfoNCE in phase 1,
#: no pixel shuffle), each lens source alone, all three, then DCL and pixel shuffle added to all
#: three, alone and together (the paper's full method, last). The first and last rows are as the
#: issue and the paper's method state them; rows 2-7 are our reading of the table's factors (the
#: paper's text was not at hand to check them; README "Reproducing the paper" says so).
ALL_LENSES = LENS_SOURCES
PAPER_TABLE3 = (
    make_cell((), "infonce", False),
    make_cell(("sam",), "infonce", False),
    make_cell(("medsam",), "infonce", False),
    make_cell(("expert",), "infonce", False),
    make_cell(ALL_LENSES, "infonce", False),
    make_cell(ALL_LENSES, "dcl", False),
    make_cell(ALL_LENSES, "infonce", True),
    make_cell(ALL_LENSES, "dcl", True),
)


def main_cell(evaluate_cfg: dict) -> Cell:
    """The lens model of Tables 1 and 2."""
    return cell_from_config(evaluate_cfg["main"])


def baseline_cell(evaluate_cfg: dict) -> Cell:
    """The model without lens of Tables 1 and 2 (original images only)."""
    b = evaluate_cfg["baseline"]
    return make_cell((), b["phase1_loss"], b["pixel_shuffle"])


def grid_rows(evaluate_cfg: dict) -> list[Cell]:
    """The configured Table 3 rows, in order (see ``GRID_MODES``)."""
    grid = evaluate_cfg["grid"]
    mode = grid["mode"]
    if mode == "paper":
        return list(PAPER_TABLE3)
    if mode == "cells":
        if not grid["cells"]:
            raise ValueError("evaluate.grid.mode is 'cells' but evaluate.grid.cells is empty")
        return [cell_from_config(c) for c in grid["cells"]]
    main = main_cell(evaluate_cfg)
    lenses, losses, shuffles = grid["lens"], grid["phase1_loss"], grid["pixel_shuffle"]
    if mode == "product":
        return [make_cell(*combo) for combo in itertools.product(lenses, losses, shuffles)]
    if mode == "one_at_a_time":
        cells = [main]
        cells += [make_cell(v, main.phase1_loss, main.pixel_shuffle) for v in lenses]
        cells += [make_cell(main.lens, v, main.pixel_shuffle) for v in losses]
        cells += [make_cell(main.lens, main.phase1_loss, v) for v in shuffles]
        return cells
    raise ValueError(f"unknown evaluate.grid.mode {mode!r}; choose from {list(GRID_MODES)}")


def grid_cells(evaluate_cfg: dict) -> list[Cell]:
    """Every cell to train, in Table 3 order, without duplicates: the grid's rows, with the
    baseline and the main cell of Tables 1-2 put first when the grid lacks them."""
    rows = grid_rows(evaluate_cfg)
    extra = [c for c in (baseline_cell(evaluate_cfg), main_cell(evaluate_cfg)) if c not in rows]
    return list(dict.fromkeys([*extra, *rows]))


#: Lens source -> the release view columns phase 1 may draw for it. ``expert`` is the masked
#: view: it is made from expert masks where a dataset has them (SLAKE) and otherwise from the
#: first segmenter of ``render.masked_from`` that has masks (see the row's provenance).
SOURCE_VIEWS = {
    **{s: [f"{s}_{k}" for k in BLEND_KINDS] for s in SEGMENTERS},
    "expert": [MASKED_VIEW],
}


def lens_views(lens: tuple[str, ...]) -> list[str]:
    """The view columns a cell's phase 1 may use ([] = original images only)."""
    return [view for source in lens for view in SOURCE_VIEWS[source]]


def train_overrides(cell: Cell, seed: int) -> dict:
    """What a cell and seed change in the ``train:`` settings (merged one level deep)."""
    return {
        "seed": seed,
        "views": lens_views(cell.lens),
        "connector": {"pixel_shuffle": cell.pixel_shuffle},
        "align": {"loss": cell.phase1_loss},
    }


def cell_train_settings(train_settings: dict, cell: Cell, seed: int) -> dict:
    """A phase's training settings (``stages.train_settings``) for one cell and seed."""
    out = dict(train_settings)
    for key, value in train_overrides(cell, seed).items():
        if isinstance(value, dict):
            if key in out:  # a phase's settings hold only their own phase section
                out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
