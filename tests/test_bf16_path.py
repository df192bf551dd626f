"""The bf16 code path (CUDA autocast in production) run on the CPU with CPU autocast, so that
dtype mistakes (bf16 tensors reaching numpy, pycocotools or NMS) show up without a GPU."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import NO_SAM_FILTER, TINY_SAM_ARCH, TINY_SAM_GENERATOR, phantom_rgb

from loclens.config import validate
from loclens.segment import build_segmenter, inference, litemedsam, medsam_vitb, rle, sam


@pytest.fixture()
def cpu_bf16(monkeypatch):
    def fake(device, precision="bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    for module in (inference, sam, medsam_vitb, litemedsam):
        monkeypatch.setattr(module, "autocast", fake)


def test_sam_automatic_in_bf16(cpu_bf16, tiny_sam_checkpoint):
    no_filter = dict(NO_SAM_FILTER)
    cfg = validate(
        {
            "datasets": {"sample": {}},
            "segment": {
                "sam": {
                    "checkpoint": str(tiny_sam_checkpoint),
                    "arch": TINY_SAM_ARCH,
                    "generator": TINY_SAM_GENERATOR,
                    "filter": no_filter,
                }
            },
        }
    )["segment"]["sam"]
    image = phantom_rgb("chest", 256, 7)[0]
    out = {}
    for precision in ("bf16", "fp32"):
        seg = build_segmenter("sam", cfg, "cpu", precision=precision)
        enc = seg.encode([image])[0]
        assert enc["features"].dtype == torch.float32
        out[precision] = seg.generate(enc, image)
    assert len(out["bf16"]) == len(out["fp32"]) == 48
    for c in out["bf16"]:
        assert rle.decode(c.rle).shape == (256, 256) and c.area > 0 and isinstance(c.score, float)


def test_box_decoder_in_bf16(cpu_bf16, tiny_medsam_checkpoint):
    # MedSAM ViT-B only: LiteMedSAM shares decode_boxes and the encoder pattern, and its real
    # TinyViT is minutes slow in bf16 on a CPU without bf16 units.
    medsam = {"backend": "medsam_vitb", "checkpoint": str(tiny_medsam_checkpoint), "arch": TINY_SAM_ARCH}
    cfg = validate({"datasets": {"sample": {}}, "segment": {"medsam": medsam}})["segment"]["medsam"]
    image, organs = phantom_rgb("abdomen", 256, 8)
    ys, xs = np.nonzero(organs["liver"])
    boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [60, 60, 200, 200]], np.float32)
    masks = {}
    for precision in ("bf16", "fp32"):
        seg = build_segmenter("medsam", cfg, "cpu", precision=precision)
        enc = seg.encode([image])[0]
        assert enc.embedding.dtype == torch.float32
        masks[precision], scores = seg.decode(enc, boxes)
        assert masks[precision].dtype == bool and scores.dtype == np.float32
    # bf16 rounds the transformer's activations; the masks stay nearly the same.
    assert (masks["bf16"] == masks["fp32"]).mean() > 0.97
