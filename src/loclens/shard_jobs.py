"""One job of each sharded stage (segment, render), driven from the plan.

The CLI commands the workflow runs, the tests' in-process builds and the benchmark all call
these, so how a job picks its rows, its masks and the views it copies is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .ingest import shard_rows
from .plan import Plan, ReleaseShard


def segment_job(
    plan: Plan, shard: int, records: str | Path, segmenter: str, settings: dict, out: str | Path, **options
) -> dict:
    """Segment the images of the plan's segment shard ``shard`` into the mask cache ``out``;
    ``options`` go to ``segment.run.run_segment_shard`` (device, context masks, workers...)."""
    from .segment.run import run_segment_shard

    rows = shard_rows(records, plan.segment_shard(shard))
    return run_segment_shard(segmenter, settings, rows, out, **options)


def open_mask_caches(paths: dict[str, list]) -> tuple[dict, list[dict]]:
    """Segmenter -> its mask cache files, read: (segmenter -> image_id -> masks, provenance of
    each segmenter whose cache records it)."""
    from .release.shards import read_mask_cache

    caches, infos = {}, []
    for segmenter, files in paths.items():
        caches[segmenter], info = read_mask_cache(files)
        if info:
            infos.append(info)
    return caches, infos


@dataclass
class RenderedShard:
    """What a render job wrote: its plan shard, the rows it read, how many it wrote, and the
    images whose views it copied from an earlier shard instead of rendering them."""

    shard: ReleaseShard
    rows: list[dict]
    written: int
    copied: frozenset[str]


def render_job(
    shard: ReleaseShard,
    records: str | Path,
    caches: dict,
    infos: list[dict],
    render_settings: dict,
    seed: int,
    config_hash: str,
    release_dir: str | Path,
    out: str | Path | None = None,
    wrap: Callable[[Iterator[dict]], Iterator[dict]] | None = None,
) -> RenderedShard:
    """Render one release shard of the plan into ``out`` (default: its place in ``release_dir``).
    The views of images an earlier shard renders are copied from that shard (``views_from``,
    relative to ``release_dir``). ``wrap`` sees the rows on their way to the writer (the
    benchmark times them)."""
    from .release.shards import release_rows, rendered_views, write_shard

    release_dir = Path(release_dir)
    rows = shard_rows(records, shard.image_ids, shard.split)
    rendered = rendered_views(shard.views_from, release_dir)
    produced = release_rows(rows, caches, infos, render_settings, seed, config_hash, rendered)
    written = write_shard(out or release_dir / shard.file, wrap(produced) if wrap else produced)
    return RenderedShard(shard, rows, written, frozenset(r["image_id"] for r in rows if r["image_id"] in rendered))


__all__ = ["segment_job", "render_job", "open_mask_caches", "RenderedShard"]
