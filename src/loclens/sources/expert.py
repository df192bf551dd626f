"""Expert annotations shipped with a dataset (SLAKE): semantic masks and organ boxes.

No official specification exists; these conventions come from several independent readers of
SLAKE, so every file is validated on load and a file that does not fit raises
``AnnotationError`` naming the file and the problem (the build stops rather than guessing):

- ``mask.txt``: one ``id:name`` line per class (``1:Liver``); ids are positive integers, unique;
- ``mask.png``: a semantic label map of the image's size, the class id of each pixel in channel 0
  (other channels are ignored), 0 = background, every other id listed in ``mask.txt``;
- ``detection.json``: a JSON list of single-key objects ``[{"Liver": [x, y, w, h]}, ...]`` in
  absolute pixels with a top-left origin; the same organ can appear more than once; the list can
  be empty. Boxes must have a positive size and lie inside the image (a margin of
  ``BOX_MARGIN`` pixels is tolerated and clipped: annotation tools round outwards).

Expert masks become mask entries (the ``masks`` struct of ``schema.FEATURES``) with segmenter ``expert``, one per
class present, labelled with the organ name; their ``checkpoint_sha256`` is the sha256 of the
``mask.png`` they come from, so every mask names the file that produced it.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..provenance import sha256_bytes
from ..segment import rle
from .base import SourceError, load_json_list

#: Boxes may overhang the image by this many pixels (then clipped); more is an error.
BOX_MARGIN = 2.0
#: ``model`` recorded in expert mask entries.
EXPERT_MODEL = "expert annotation (mask.png)"

_MASK_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S(?:.*\S)?)\s*$")


class AnnotationError(SourceError):
    """An expert annotation file that does not fit the expected convention."""


def read_class_names(path: Path) -> dict[int, str]:
    """``mask.txt`` -> {class id: organ name}."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"{path}: class list not found (needed to name the ids of mask.png files)") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text ({exc})") from None
    names: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _MASK_LINE.match(line)
        if not match:
            raise AnnotationError(f"{path}:{number}: expected 'id:name', got {line.strip()!r}")
        class_id, name = int(match.group(1)), match.group(2)
        if class_id == 0:
            raise AnnotationError(f"{path}:{number}: id 0 is the background and cannot name a class")
        if class_id in names:
            raise AnnotationError(f"{path}:{number}: id {class_id} listed twice ({names[class_id]!r}, {name!r})")
        names[class_id] = name
    if not names:
        raise AnnotationError(f"{path}: no 'id:name' lines")
    return names


def read_label_map(path: Path, width: int, height: int, names: dict[int, str]) -> np.ndarray:
    """``mask.png`` -> HxW int array of class ids, checked against the image size and names."""
    try:
        img = Image.open(io.BytesIO(path.read_bytes()))
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AnnotationError(f"{path}: not a readable image ({exc})") from None
    if img.size != (width, height):
        raise AnnotationError(f"{path}: label map is {img.width}x{img.height}, the image is {width}x{height}")
    if img.mode == "P":
        arr = np.asarray(img)  # palette indices are the class ids
    elif img.mode in ("L", "I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img)
    else:
        arr = np.asarray(img.convert("RGB"))[..., 0]
    ids = np.asarray(arr, dtype=np.int64)
    unknown = sorted(int(i) for i in np.unique(ids) if i != 0 and int(i) not in names)
    if unknown:
        raise AnnotationError(f"{path}: class ids {unknown} are not listed in mask.txt")
    return ids


def expert_masks(path: Path, width: int, height: int, names: dict[int, str]) -> list[dict]:
    """One mask entry per class present in ``mask.png``, ordered by class id."""
    ids = read_label_map(path, width, height, names)
    digest = sha256_bytes(path.read_bytes())
    entries = []
    for class_id in sorted(int(i) for i in np.unique(ids) if i != 0):
        mask = ids == class_id
        encoded = rle.encode(mask)
        entries.append(
            {
                "segmenter": "expert",
                "label": names[class_id],
                "prompt_source": None,
                "rle": encoded,
                "bbox": rle.bbox_xywh(encoded),
                "prompt_box": None,
                "score": None,
                "area": int(mask.sum()),
                "model": EXPERT_MODEL,
                "checkpoint_sha256": digest,
            }
        )
    return entries


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def read_boxes(path: Path, width: int, height: int) -> list[dict]:
    """``detection.json`` -> [{"label": organ, "box": [x, y, w, h]}] in file order."""
    data = load_json_list(path, "{organ: [x, y, w, h]} objects", AnnotationError)
    boxes = []
    for index, item in enumerate(data):
        where = f"{path}[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise AnnotationError(f"{where}: expected a single-key object {{organ: [x, y, w, h]}}, got {item!r}")
        ((label, box),) = item.items()
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise AnnotationError(f"{where}: box of {label!r} must be 4 numbers [x, y, w, h], got {box!r}")
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{where}: box of {label!r} has a non-positive size {box!r}")
        if x < -BOX_MARGIN or y < -BOX_MARGIN or x + w > width + BOX_MARGIN or y + h > height + BOX_MARGIN:
            raise AnnotationError(
                f"{where}: box of {label!r} {box!r} (x, y, w, h) lies outside the {width}x{height} image"
            )
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(width)), min(y + h, float(height))
        boxes.append({"label": str(label), "box": [x0, y0, x1 - x0, y1 - y0]})
    return boxes


__all__ = ["AnnotationError", "read_class_names", "read_label_map", "expert_masks", "read_boxes", "EXPERT_MODEL"]
