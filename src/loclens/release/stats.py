"""Release statistics in one streaming pass: views present and missing (with the reason), masks
per image, mask areas and alpha draws, per dataset and split; and the coverage of each dataset
by body region (images with a segmenter's views / images), which the manifest records and the
dataset card and ``loclens bench`` print.

The dataset card and the QC summary plots are both made from these figures. Only small nested
columns are read (the ``path`` of each view, never its bytes; mask areas, not RLEs), one row
group at a time, so memory stays bounded whatever the release size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from ..schema import BLEND_VIEW_COLUMNS, MASKED_VIEW, SEGMENTERS, VIEW_COLUMNS

#: Why a view is null, in words the dataset card prints.
NOT_RUN = "segmenter not run"
NO_MASKS = "segmenter found no mask"
NO_MASK_SOURCE = "no mask source had masks"

#: The body region of images whose record has none.
UNKNOWN_REGION = "unknown"

_STATS_COLUMNS = [
    "image_id",
    "body_region",
    "width",
    "height",
    *(f"{v}.path" for v in VIEW_COLUMNS),
    "alpha",
    "masks.list.element.segmenter",
    "masks.list.element.area",
    "qa.list.element.qid",
    "provenance.segmenters.list.element.segmenter",
]


@dataclass
class SplitStats:
    rows: int = 0
    qa: int = 0
    present: Counter = field(default_factory=Counter)  # view -> non-null rows
    missing: dict[str, Counter] = field(default_factory=dict)  # view -> reason -> rows
    masks_per_image: dict[str, list[int]] = field(default_factory=dict)  # segmenter -> per row
    area_fraction: dict[str, list[float]] = field(default_factory=dict)  # segmenter -> per mask
    alpha: dict[str, list[float]] = field(default_factory=dict)  # segmenter -> per row (non-null)
    # image_id -> (body region, segmenters whose views the image has); an image's rows in
    # several splits share one entry, so coverage counts images, not rows.
    images: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)

    def add_row(self, row: dict) -> None:
        self.rows += 1
        self.qa += len(row["qa"] or [])
        run = {s["segmenter"] for s in (row["provenance"] or {}).get("segmenters") or []}
        masks = row["masks"] or []
        pixels = max(1, row["width"] * row["height"])
        for seg in SEGMENTERS:
            own = [m for m in masks if m["segmenter"] == seg]
            if seg in run:
                self.masks_per_image.setdefault(seg, []).append(len(own))
            self.area_fraction.setdefault(seg, []).extend(m["area"] / pixels for m in own)
            if (row["alpha"] or {}).get(seg) is not None:
                self.alpha.setdefault(seg, []).append(float(row["alpha"][seg]))
        self.images[row["image_id"]] = image_coverage(row)
        for view in VIEW_COLUMNS:
            if row[view] is not None:
                self.present[view] += 1
            else:
                self.missing.setdefault(view, Counter())[_missing_reason(view, run)] += 1

    @property
    def n_missing(self) -> int:
        return sum(sum(c.values()) for c in self.missing.values())


def _missing_reason(view: str, segmenters_run: set[str]) -> str:
    if view == MASKED_VIEW:
        return NO_MASK_SOURCE
    segmenter = view.split("_", 1)[0]
    return NO_MASKS if segmenter in segmenters_run else NOT_RUN


def iter_rows(path: Path, columns: list[str] | None = None):
    """Rows of one shard as dicts, one row group in memory at a time."""
    pf = pq.ParquetFile(path)
    for rg in range(pf.num_row_groups):
        yield from pf.read_row_group(rg, columns=columns).to_pylist()


def split_stats(release_dir: Path, shards: list[dict]) -> SplitStats:
    stats = SplitStats()
    for shard in shards:
        for row in iter_rows(Path(release_dir) / shard["file"], _STATS_COLUMNS):
            stats.add_row(row)
    return stats


def release_stats(release_dir: Path, manifest: dict) -> dict[str, dict[str, SplitStats]]:
    """dataset -> split -> statistics, for every split the manifest lists."""
    return {
        name: {split: split_stats(release_dir, s["shards"]) for split, s in sorted(d["splits"].items())}
        for name, d in sorted(manifest["datasets"].items())
    }


def image_coverage(row: dict) -> tuple[str, frozenset[str]]:
    """A release row's body region and the segmenters whose views it has."""
    with_views = frozenset(v.split("_", 1)[0] for v in BLEND_VIEW_COLUMNS if row[v] is not None)
    return row["body_region"] or UNKNOWN_REGION, with_views


def coverage(stats: dict[str, SplitStats], segmenters: list[str]) -> dict:
    """``coverage_of`` the images of all splits of a dataset."""
    images: dict[str, tuple[str, frozenset[str]]] = {}
    for s in stats.values():
        images.update(s.images)
    return coverage_of(images, segmenters)


def coverage_of(images: dict[str, tuple[str, frozenset[str]]], segmenters: list[str]) -> dict:
    """How many images (image_id -> ``image_coverage``) have each run segmenter's views, by
    body region and in all: ``{"segmenters": [...], "regions": {region: {"images": n,
    <segmenter>: covered}}, "all": {...}}``. An image with several regions (``"abdomen,chest"``)
    counts under that combination, so the regions add up to all."""
    regions: dict[str, dict[str, int]] = {}
    total = {"images": 0, **{seg: 0 for seg in segmenters}}
    for region, with_views in images.values():
        entry = regions.setdefault(region, {"images": 0, **{seg: 0 for seg in segmenters}})
        for counts in (entry, total):
            counts["images"] += 1
            for seg in segmenters:
                counts[seg] += seg in with_views
    return {"segmenters": list(segmenters), "regions": dict(sorted(regions.items())), "all": total}
