"""Filtering SAM's automatic masks for radiology images.

SAM in "everything" mode also returns masks that carry no localization on a radiograph or a
CT slice: the background, the whole body or the whole image, specks, burned-in text and
markers ("L", "R", scale bars, annotations) near the borders, and near-copies of one structure
found from several grid points. The filters below remove them, in this order; each is
configured under ``segment.sam.filter`` and disabled by setting its threshold to ``null``:

1. ``min_area_fraction`` / ``max_area_fraction``: keep masks whose area is within these
   fractions of the image area.
2. ``max_span_fraction``: drop masks whose bounding box spans at least this fraction of both
   the image width and height (background, body outline, whole image).
3. ``border_fraction`` with ``marker_max_area_fraction``: drop small masks (area at most
   ``marker_max_area_fraction`` of the image) whose bounding box lies entirely inside the
   band of ``border_fraction`` of the image along one edge: where burned-in text and markers sit.
4. ``dedup_iou``: near-duplicates; masks are visited by predicted IoU (then area), and a mask
   whose mask IoU with an already kept one is at least this value is dropped.
5. ``max_masks``: keep at most this many, largest first.

Kept masks are returned largest first (ties by box), so the order never depends on SAM's
internal batching.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils


@dataclass(frozen=True)
class Candidate:
    """One automatic mask: COCO RLE (counts as str), area, box [x, y, w, h] and SAM's scores."""

    rle: dict
    area: int
    bbox: tuple[float, float, float, float]
    score: float
    stability: float = 0.0


def _span_too_wide(c: Candidate, h: int, w: int, fraction: float) -> bool:
    return c.bbox[2] >= fraction * w and c.bbox[3] >= fraction * h


def _is_border_marker(c: Candidate, h: int, w: int, band: float, max_area: float) -> bool:
    if c.area > max_area * h * w:
        return False
    x, y, bw, bh = c.bbox
    return x + bw <= band * w or x >= (1 - band) * w or y + bh <= band * h or y >= (1 - band) * h


def _rle_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _dedup(cands: list[Candidate], threshold: float) -> tuple[list[Candidate], int]:
    order = sorted(cands, key=lambda c: (-c.score, -c.area, c.bbox))
    if len(order) < 2:
        return order, 0
    rles = [_rle_bytes(c.rle) for c in order]
    iou = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)))
    kept: list[int] = []
    for i in range(len(order)):
        if all(iou[i, j] < threshold for j in kept):
            kept.append(i)
    return [order[i] for i in kept], len(order) - len(kept)


def filter_masks(cands: list[Candidate], image_hw: tuple[int, int], cfg: dict) -> tuple[list[Candidate], dict]:
    """The candidates worth a lens, and how many each filter dropped."""
    h, w = image_hw
    total = h * w
    dropped: Counter = Counter()

    def keep_if(name: str, keep) -> None:
        nonlocal cands
        kept = [c for c in cands if keep(c)]
        dropped[name] += len(cands) - len(kept)
        cands = kept

    if cfg.get("min_area_fraction") is not None:
        keep_if("min_area", lambda c: c.area >= cfg["min_area_fraction"] * total)
    if cfg.get("max_area_fraction") is not None:
        keep_if("max_area", lambda c: c.area <= cfg["max_area_fraction"] * total)
    if cfg.get("max_span_fraction") is not None:
        keep_if("span", lambda c: not _span_too_wide(c, h, w, cfg["max_span_fraction"]))
    if cfg.get("border_fraction") is not None and cfg.get("marker_max_area_fraction") is not None:
        band, small = cfg["border_fraction"], cfg["marker_max_area_fraction"]
        keep_if("border_marker", lambda c: not _is_border_marker(c, h, w, band, small))
    if cfg.get("dedup_iou") is not None:
        cands, n = _dedup(cands, cfg["dedup_iou"])
        dropped["duplicate"] += n
    cands = sorted(cands, key=lambda c: (-c.area, c.bbox))
    if cfg.get("max_masks") is not None and len(cands) > cfg["max_masks"]:
        dropped["max_masks"] += len(cands) - cfg["max_masks"]
        cands = cands[: cfg["max_masks"]]
    return cands, dict(dropped)
