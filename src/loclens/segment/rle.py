"""COCO run-length encoding of masks, via pycocotools (the format SAM and COCO tools read)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict:
    """Binary HxW mask -> {"size": [h, w], "counts": str}."""
    # One Fortran-order copy of the boolean mask, viewed as the uint8 pycocotools wants
    # (astype then asfortranarray would copy the full-resolution mask twice).
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=bool).view(np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _scaled_starts(small: int, full: int) -> np.ndarray:
    """start[r] = first full-resolution index whose nearest-neighbour source is >= r, for
    r = 0..small, under the mapping ``src(i) = (i * small) // full``."""
    r = np.arange(small + 1, dtype=np.int64)
    return -((-r * full) // small)  # ceil(r * full / small)


def encode_resized(mask: np.ndarray, size: tuple[int, int]) -> dict:
    """RLE of ``mask`` scaled to ``size`` = (height, width) by nearest neighbour (source pixel
    of full-resolution (y, x) is ``(y*h//H, x*w//W)``), built from the runs of the small mask
    without ever holding the full-resolution mask: memory grows with the width, not the area.
    Equal to ``encode`` of the materialised upscaled mask."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    height, width = int(size[0]), int(size[1])
    if (h, w) == (height, width):
        return encode(mask)
    row_start = _scaled_starts(h, height)
    column_runs = []  # per small column: run lengths at full height, starting with a 0-run
    for c in range(w):
        col = mask[:, c].astype(np.int8)
        edges = np.flatnonzero(np.diff(col)) + 1
        bounds = np.concatenate(([0], edges, [h]))
        lengths = np.diff(row_start[bounds]).tolist()
        column_runs.append(lengths if col[0] == 0 else [0] + lengths)
    counts: list[int] = []
    value = 0  # the value of counts[-1]'s run
    for x in range(width):
        runs = column_runs[(x * w) // width]
        for k, length in enumerate(runs):
            run_value = k % 2
            if length == 0:
                continue
            if counts and run_value == value:
                counts[-1] += length
            else:
                if not counts and run_value == 1:
                    counts.append(0)  # COCO RLE starts with a (possibly empty) run of zeros
                counts.append(length)
                value = run_value
    return from_counts(counts, (height, width))


def from_counts(counts: list[int], size: tuple[int, int]) -> dict:
    """Uncompressed COCO counts (column-major runs, first a run of zeros) of a mask of ``size``
    = (height, width) -> the compressed RLE ``encode`` gives for that mask."""
    height, width = int(size[0]), int(size[1])
    compressed = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": compressed["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """{"size", "counts"} -> boolean HxW mask. Raises ValueError on a malformed RLE."""
    size = [int(s) for s in rle["size"]]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    mask = mask_utils.decode({"size": size, "counts": counts})
    if mask.shape != tuple(size):
        raise ValueError(f"RLE decodes to {mask.shape}, expected {tuple(size)}")
    return mask.astype(bool)


def area(rle: dict) -> int:
    return int(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def bbox_xywh(rle: dict) -> list[float]:
    return [float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})]
