"""Lens rendering and RLE: the paper's formula, determinism, overlap and the masked view."""

from __future__ import annotations

import numpy as np
import pytest

from loclens import lens
from loclens.segment import rle

ALPHA = {"mean": 0.5, "std": 0.1, "min": 0.2, "max": 0.8}


def test_rle_round_trip_and_metadata():
    mask = np.zeros((37, 53), bool)
    mask[5:20, 10:31] = True
    mask[30, 50] = True
    enc = rle.encode(mask)
    assert enc["size"] == [37, 53] and isinstance(enc["counts"], str)
    assert np.array_equal(rle.decode(enc), mask)
    assert rle.area(enc) == mask.sum()
    assert rle.bbox_xywh(enc) == [10.0, 5.0, 41.0, 26.0]


def test_alpha_is_deterministic_per_image_and_source_and_clipped():
    a = lens.draw_alpha(0, "abc", "medsam", ALPHA)
    assert a == lens.draw_alpha(0, "abc", "medsam", ALPHA)
    assert a != lens.draw_alpha(0, "abc", "sam", ALPHA)
    assert a != lens.draw_alpha(1, "abc", "medsam", ALPHA)
    draws = [lens.draw_alpha(0, f"img{i}", "medsam", ALPHA) for i in range(2000)]
    assert min(draws) >= np.float32(0.2) and max(draws) <= np.float32(0.8)  # stored as float32
    assert abs(np.mean(draws) - 0.5) < 0.01 and abs(np.std(draws) - 0.1) < 0.01


def test_unicolor_follows_the_paper_formula():
    image = np.full((4, 4, 3), 100, np.uint8)
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    labels = lens.label_map([m])
    out = lens.unicolor(image, labels, 0.25, (255, 0, 0), "paper")
    # inside: 0.25*100 + 0.75*(255,0,0); outside: 0.25*100 (C = 0 there)
    assert tuple(out[0, 0]) == (216, 25, 25)
    assert tuple(out[3, 3]) == (25, 25, 25)
    kept = lens.unicolor(image, labels, 0.25, (255, 0, 0), "keep")
    assert tuple(kept[3, 3]) == (100, 100, 100) and tuple(kept[0, 0]) == (216, 25, 25)


def test_overlaps_get_one_colour_smaller_on_top():
    big = np.zeros((10, 10), bool)
    big[:, :] = True
    small = np.zeros((10, 10), bool)
    small[4:6, 4:6] = True
    labels = lens.label_map([small, big])
    assert labels[5, 5] == 1 and labels[0, 0] == 2
    image = np.zeros((10, 10, 3), np.uint8)
    palette = [(10, 20, 30), (200, 100, 50)]
    out = lens.multicolor(image, labels, 0.0, palette, "paper")
    assert tuple(out[5, 5]) == (10, 20, 30) and tuple(out[0, 0]) == (200, 100, 50)


def test_masked_view_zeroes_outside_union():
    image = np.random.default_rng(0).integers(1, 255, (8, 8, 3), dtype=np.uint8)
    m = np.zeros((8, 8), bool)
    m[2:5, 3:7] = True
    out = lens.masked(image, m)
    assert np.array_equal(out[m], image[m]) and not out[~m].any()


def test_png_is_byte_identical_and_mask_shape_checked():
    image = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert lens.png_bytes(image, 1) == lens.png_bytes(image.copy(), 1)
    entry = {"label": "x", "rle": rle.encode(np.ones((5, 5), bool))}
    with pytest.raises(ValueError, match="mask 'x' is"):
        lens.decode_masks([entry], (6, 5))
