"""COCO run-length encoding of masks, via pycocotools (the format SAM and COCO tools read)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict:
    """Binary HxW mask -> {"size": [h, w], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


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
