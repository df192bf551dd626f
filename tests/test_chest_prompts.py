"""The `chest` prompt source on real chest radiographs whose body fills the frame (VQA-RAD, CC0;
tests/data/radiographs/README.md): `otsu` finds no box on them, `chest` finds the lung fields,
the mediastinum, the heart shadow and the body below the diaphragm, and LiteMedSAM segments
the lung fields from those boxes.

The anatomical landmarks below were read off the images by eye (pixel coordinates of the
original files, x right, y down): a point well inside each lung field, one on the mediastinum
(trachea / spine between the lungs), one in the heart shadow and one in the upper abdomen
under the diaphragm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loclens.config import validate
from loclens.imageio import load_rgb, read_bytes
from loclens.segment.prompts import chest_prompts, otsu_prompts, prompts_for

RADIOGRAPHS = Path(__file__).parent / "data" / "radiographs"

#: file -> landmarks (x, y): lungs (image left, image right), mediastinum, heart, below the diaphragm.
LANDMARKS = {
    "synpic31217.jpg": {
        "lungs": [(140, 200), (360, 200)],
        "mediastinum": (258, 180),
        "heart": (270, 330),
        "below": (150, 480),
    },
    "synpic55464.jpg": {
        "lungs": [(200, 300), (470, 300)],
        "mediastinum": (330, 250),
        "heart": (360, 430),
        "below": (300, 620),
    },
    "synpic29048.jpg": {
        "lungs": [(220, 350), (520, 320)],
        "mediastinum": (380, 250),
        "heart": (420, 450),
        "below": (380, 650),
    },
}


def _cfg() -> dict:
    return validate({"datasets": {"sample": {}}})["segment"]["medsam"]


def _source_cfg(name: str) -> dict:
    cfg = _cfg()
    return {"max_prompts": cfg["max_prompts"], **cfg[name]}


def _image(name: str) -> np.ndarray:
    path = RADIOGRAPHS / name
    return load_rgb(read_bytes(path), str(path))


def _contains(box, point) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= point[0] < x1 and y0 <= point[1] < y1


def _by_label(prompts) -> dict:
    return {p.label.removeprefix("chest-"): p.box for p in prompts}


@pytest.mark.parametrize("name", sorted(LANDMARKS))
def test_otsu_finds_nothing_where_the_body_fills_the_frame_and_chest_takes_over(name):
    image = _image(name)
    assert otsu_prompts(image, _source_cfg("otsu")) == []
    cfg = _cfg()
    assert cfg["prompts"][-2:] == ["otsu", "chest"]
    prompts = prompts_for(image, ["expert", "otsu", "chest"], cfg)
    assert prompts and {p.source for p in prompts} == {"chest"}


@pytest.mark.parametrize("name", sorted(LANDMARKS))
def test_chest_boxes_land_on_the_anatomy(name):
    image = _image(name)
    h, w = image.shape[:2]
    marks = LANDMARKS[name]
    boxes = _by_label(chest_prompts(image, _source_cfg("chest")))
    assert set(boxes) == {
        "lung-field-image-left",
        "lung-field-image-right",
        "mediastinum",
        "heart-shadow",
        "below-diaphragm",
    }
    left, right = boxes["lung-field-image-left"], boxes["lung-field-image-right"]
    for box in boxes.values():
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert (x1 - x0) < 0.95 * w or (y1 - y0) < 0.95 * h  # never a whole-image box
    # Each lung box holds its own lung and neither the other lung nor the mediastinum; the two
    # lie on either side of the mediastinum, and each is a lung's size (not the body's).
    assert _contains(left, marks["lungs"][0]) and not _contains(left, marks["lungs"][1])
    assert _contains(right, marks["lungs"][1]) and not _contains(right, marks["lungs"][0])
    for lung in (left, right):
        assert not _contains(lung, marks["mediastinum"])
        assert 0.15 * w < lung[2] - lung[0] < 0.55 * w and 0.3 * h < lung[3] - lung[1] < 0.8 * h
        # Not stretched into the shoulders: the top corners of the frame are outside.
        assert not _contains(lung, (2, 2)) and not _contains(lung, (w - 3, 2))
    assert left[2] <= marks["mediastinum"][0] < right[0]
    # The mediastinum box is between the lungs' centres and holds the midline structures.
    med = boxes["mediastinum"]
    assert _contains(med, marks["mediastinum"])
    assert (left[0] + left[2]) / 2 < med[0] and med[2] < (right[0] + right[2]) / 2
    # The heart shadow is the mediastinum's lower part.
    heart = boxes["heart-shadow"]
    assert _contains(heart, marks["heart"]) and heart[1] > med[1] and heart[3] <= med[3] + 1
    # Below the diaphragm: under the higher lung base, across the lungs.
    below = boxes["below-diaphragm"]
    assert _contains(below, marks["below"])
    assert below[1] >= min(left[3], right[3]) - 1 and below[0] <= left[0] + 1 and below[2] >= right[2] - 1
    # Lung fields are air: darker than the mediastinum between them.
    gray = image.mean(axis=2)

    def mean_in(box):
        x0, y0, x1, y1 = (int(v) for v in box)
        return gray[y0:y1, x0:x1].mean()

    assert max(mean_in(left), mean_in(right)) < mean_in(med)


def test_chest_boxes_are_deterministic_and_follow_the_image_size():
    """Same image, same boxes; the image at half size (as a reduced read would give it) gives
    the same boxes at half scale, within a few pixels of the analysis copy."""
    image = _image("synpic29048.jpg")
    cfg = _source_cfg("chest")
    first = chest_prompts(image, cfg)
    assert first == chest_prompts(image, cfg)
    from PIL import Image

    half = np.asarray(Image.fromarray(image).resize((image.shape[1] // 2, image.shape[0] // 2), Image.Resampling.BOX))
    halved = _by_label(chest_prompts(half, cfg))
    tolerance = 0.03 * max(image.shape[:2])
    full = _by_label(first)
    assert set(halved) == set(full)
    for label, box in full.items():
        assert np.abs(np.array(halved[label]) * 2 - np.array(box)).max() < tolerance, label


def test_chest_finds_nothing_without_lung_fields():
    """No lung field, no box: a flat image, and a bright body without air inside it."""
    cfg = _source_cfg("chest")
    assert chest_prompts(np.full((128, 128, 3), 90, np.uint8), cfg) == []
    body = np.zeros((200, 160, 3), np.uint8)
    body[20:180, 20:140] = 180
    body[60:120, 50:110] = 230  # a denser organ, no air
    assert chest_prompts(body, cfg) == []


def test_chest_settings_are_config_keys():
    cfg = _cfg()["chest"]
    assert set(cfg) == {"work_side", "rim_fraction", "opening_fraction", "min_lung_fraction", "min_below_fraction"}
    image = _image("synpic31217.jpg")
    strict = {**_source_cfg("chest"), "min_lung_fraction": 0.5}  # no lung field covers half the image
    assert chest_prompts(image, strict) == []
    no_below = {**_source_cfg("chest"), "min_below_fraction": 1.0}
    assert "below-diaphragm" not in _by_label(chest_prompts(image, no_below))
    one = {**_source_cfg("chest"), "max_prompts": 2}
    assert set(_by_label(chest_prompts(image, one))) == {"lung-field-image-left", "lung-field-image-right"}


def test_litemedsam_segments_the_lung_fields_from_chest_boxes(litemedsam):
    """The real model on the real radiograph: each lung box gives a mask that fills a good part
    of its box, lies inside it, and is darker (air) than the mediastinum's mask."""
    image = _image("synpic55464.jpg")
    prompts = chest_prompts(image, _source_cfg("chest"))
    masks, _ = litemedsam.decode(litemedsam.encode([image])[0], np.array([p.box for p in prompts], np.float32))
    gray = image.mean(axis=2)
    by_label = {p.label.removeprefix("chest-"): (p.box, m) for p, m in zip(prompts, masks)}
    assert all(m.any() for m in masks)
    med_mean = gray[by_label["mediastinum"][1]].mean()
    for side in ("left", "right"):
        (x0, y0, x1, y1), mask = by_label[f"lung-field-image-{side}"]
        inside = mask[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].sum()
        assert mask.sum() > 0.3 * (x1 - x0) * (y1 - y0)
        assert inside > 0.9 * mask.sum()
        assert gray[mask].mean() < med_mean
