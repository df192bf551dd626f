"""MedSAM ViT-B backend on a small random vit_b-style network: MedSAM's preprocessing, box
scaling, batched decoding, and boxes from SAM masks as prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_SAM_ARCH, phantom_rgb
from loclens.config import validate
from loclens.segment import build_segmenter, rle
from loclens.segment.checkpoints import CheckpointError
from loclens.segment.medsam_vitb import preprocess
from loclens.segment.prompts import prompt_context, prompts_for
from loclens.segment.run import mask_entries


@pytest.fixture(scope="module")
def medsam(tiny_medsam_checkpoint):
    cfg = {"backend": "medsam_vitb", "checkpoint": str(tiny_medsam_checkpoint), "arch": TINY_SAM_ARCH}
    cfg = validate({"datasets": {"sample": {}}, "segment": {"medsam": cfg}})["segment"]["medsam"]
    return build_segmenter("medsam", cfg, "cpu")


def test_preprocess_resizes_whole_image_and_min_max_normalises():
    img = np.zeros((100, 400, 3), np.uint8)
    img[:, :200] = 50
    img[:, 200:] = 150
    out = preprocess(img, 1024)
    assert out.shape == (3, 1024, 1024) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    # Aspect ratio not kept: the left half of the image fills the left half of the frame
    # (bicubic overshoot at the step sets the extremes; away from it each half is flat).
    left, right = out[:, :, :480], out[:, :, 544:]
    assert np.ptp(left) < 1e-6 and np.ptp(right) < 1e-6 and left.max() < 0.1 and right.min() > 0.9
    assert not np.allclose(preprocess(img, 256)[0], 0.0)  # no SAM padding region


def test_batched_encoder_equals_one_image_at_a_time(medsam):
    images = [phantom_rgb("abdomen", 256, 0)[0], phantom_rgb("head", 384, 3)[0]]
    batched = medsam.encode(images)
    for image, enc in zip(images, batched):
        single = medsam.encode([image])[0]
        torch.testing.assert_close(enc.embedding, single.embedding, rtol=1e-4, atol=1e-4)
        assert enc.original_hw == image.shape[:2] and enc.resized_hw == (256, 256)


def test_decode_scales_boxes_and_thresholds_sigmoid_as_medsam(medsam):
    """Against MedSAM's inference recipe written out step by step, one box at a time."""
    image, _ = phantom_rgb("chest", 320, 4)
    h, w = image.shape[:2]
    boxes = np.array([[40, 60, 200, 220], [150, 30, 300, 120], [10, 10, 90, 300]], np.float32)
    enc = medsam.encode([image])[0]
    masks, scores = medsam.decode(enc, boxes)
    assert masks.shape == (3, h, w) and masks.dtype == bool and scores.shape == (3,)
    net = medsam.net
    with torch.no_grad():
        emb = net.image_encoder(torch.from_numpy(preprocess(image, 256))[None])
        for i, box in enumerate(boxes):
            box_256 = torch.as_tensor(box / np.array([w, h, w, h]) * 256, dtype=torch.float32)[None, None]
            sparse, dense = net.prompt_encoder(points=None, boxes=box_256, masks=None)
            low, iou = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=False)
            ref = F.interpolate(torch.sigmoid(low), size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0.5
            agree = (ref.numpy() == masks[i]).mean()
            assert agree > 0.999, agree
            assert abs(float(iou[0, 0]) - scores[i]) < 1e-3
    empty_masks, empty_scores = medsam.decode(enc, np.zeros((0, 4), np.float32))
    assert empty_masks.shape == (0, h, w) and empty_scores.shape == (0,)


def test_sam_boxes_prompt_medsam(medsam):
    """The `sam` prompt source: boxes of SAM's masks from the context, largest first, labels
    kept, whole-image boxes never used; `otsu` only when SAM has no usable box."""
    image, organs = phantom_rgb("abdomen", 256, 5)
    sam_masks = []
    for k, name in enumerate(["spine", "liver"]):
        encoded = rle.encode(organs[name])
        sam_masks.append({"label": f"sam-{k}", "bbox": rle.bbox_xywh(encoded), "area": int(organs[name].sum()), "score": 0.9})
    sam_masks.append({"label": "sam-2", "bbox": [0.0, 0.0, 256.0, 256.0], "area": 60000, "score": 0.99})
    cfg = validate({"datasets": {"sample": {}}})["segment"]["medsam"]
    assert cfg["prompts"] == ["expert", "sam", "otsu"]
    context = prompt_context({}, masks={"sam": sam_masks})
    prompts = prompts_for(image, cfg["prompts"], cfg, context)
    assert [p.source for p in prompts] == ["sam", "sam"]
    by_area = sorted(sam_masks[:2], key=lambda m: -m["area"])
    assert [p.label for p in prompts] == [m["label"] for m in by_area]
    x, y, bw, bh = by_area[0]["bbox"]
    assert prompts[0].box == (x, y, x + bw, y + bh)

    masks, scores = medsam.decode(medsam.encode([image])[0], np.array([p.box for p in prompts], np.float32))
    entries = mask_entries(medsam, masks, scores, prompts)
    assert len(entries) == len(prompts)
    for e in entries:
        assert e["prompt_source"] == "sam" and e["model"] == "MedSAM ViT-B"
        assert rle.decode(e["rle"]).shape == image.shape[:2]
        assert e["checkpoint_sha256"] == medsam.checkpoint_sha256

    only_whole = prompt_context({}, masks={"sam": sam_masks[2:]})
    assert {p.source for p in prompts_for(image, cfg["prompts"], cfg, only_whole)} == {"otsu"}


def test_missing_medsam_weights_say_where_to_get_them():
    from loclens.segment.checkpoints import checkpoint_target

    cfg = validate({"datasets": {"sample": {}}, "segment": {"medsam": {"backend": "medsam_vitb"}}})["segment"]["medsam"]
    with pytest.raises(CheckpointError, match=r"medsam_vit_b\.pth from the MedSAM repository .*segment\.medsam\.checkpoint"):
        checkpoint_target("medsam", cfg, "resources")
    with pytest.raises(CheckpointError, match="needs the MedSAM ViT-B checkpoint"):
        build_segmenter("medsam", cfg, "cpu")
