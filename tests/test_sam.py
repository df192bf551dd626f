"""SAM in automatic mode: the real SamAutomaticMaskGenerator on a small random SAM, the
architecture table against segment_anything's, batched embeddings, and the radiology filters."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import torch
from conftest import NO_SAM_FILTER, TINY_SAM_ARCH, TINY_SAM_GENERATOR, phantom_rgb
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

from loclens.config import ConfigError, validate
from loclens.segment import build_segmenter, rle
from loclens.segment.checkpoints import CheckpointError
from loclens.segment.sam import generator_args
from loclens.segment.sam_filter import Candidate, filter_masks
from loclens.segment.sam_models import ARCHS, build_sam_network, load_sam_network


def _sam_cfg(checkpoint, **overrides) -> dict:
    sam = {"enabled": True, "checkpoint": str(checkpoint), "arch": TINY_SAM_ARCH, "generator": dict(TINY_SAM_GENERATOR)}
    sam.update(overrides)
    return validate({"datasets": {"sample": {}}, "segment": {"sam": sam}})["segment"]["sam"]


def test_vit_b_table_builds_the_library_architecture():
    ours = build_sam_network("vit_b").state_dict()
    theirs = sam_model_registry["vit_b"]().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("model_type", ["vit_l", "vit_h"])
def test_large_encoders_match_the_library_registry(model_type, monkeypatch):
    # Building ViT-L/H would allocate GBs; capture what the library passes to its builder instead.
    captured = {}
    build_sam_module = importlib.import_module("segment_anything.build_sam")
    monkeypatch.setattr(build_sam_module, "_build_sam", lambda **kw: captured.update(kw))
    sam_model_registry[model_type]()
    arch = ARCHS[model_type]
    assert captured["encoder_embed_dim"] == arch["encoder_embed_dim"]
    assert captured["encoder_depth"] == arch["encoder_depth"]
    assert captured["encoder_num_heads"] == arch["encoder_num_heads"]
    assert list(captured["encoder_global_attn_indexes"]) == arch["encoder_global_attn_indexes"]


def test_generator_receives_only_the_settings_given(tiny_sam_checkpoint):
    seg = build_segmenter("sam", _sam_cfg(tiny_sam_checkpoint, generator={"points_per_side": 4}), "cpu")
    defaults = {k: p.default for k, p in inspect.signature(SamAutomaticMaskGenerator.__init__).parameters.items()}
    gen = seg.generator
    assert gen.point_grids[0].shape == (16, 2)  # points_per_side=4 from the config
    # Everything else keeps the library's defaults.
    assert gen.points_per_batch == defaults["points_per_batch"]
    assert gen.pred_iou_thresh == defaults["pred_iou_thresh"]
    assert gen.stability_score_thresh == defaults["stability_score_thresh"]
    assert gen.box_nms_thresh == defaults["box_nms_thresh"]
    assert gen.output_mode == "coco_rle"
    assert isinstance(gen.predictor, SamPredictor) and gen.predictor is seg.predictor


def test_schema_knows_exactly_the_generator_settings():
    from loclens.config import schema

    props = schema()["properties"]["segment"]["properties"]["sam"]["properties"]["generator"]["properties"]
    assert set(props) == set(generator_args())
    with pytest.raises(ConfigError, match="generator: Additional properties are not allowed"):
        validate({"datasets": {"sample": {}}, "segment": {"sam": {"generator": {"points_per_edge": 4}}}})


def test_batched_embeddings_give_the_library_masks(tiny_sam_checkpoint):
    """Encoding images in one batch and handing the embedding to the generator changes nothing:
    the masks equal those of a plain SamAutomaticMaskGenerator with the same settings."""
    cfg = _sam_cfg(
        tiny_sam_checkpoint,
        filter=dict(NO_SAM_FILTER),
    )
    seg = build_segmenter("sam", cfg, "cpu")
    images = [phantom_rgb("abdomen", 256, 0)[0], phantom_rgb("chest", 320, 1)[0]]
    encoded = seg.encode(images)
    net = load_sam_network("vit_b", tiny_sam_checkpoint, TINY_SAM_ARCH)
    plain = SamAutomaticMaskGenerator(net, output_mode="coco_rle", **TINY_SAM_GENERATOR)
    for image, enc in zip(images, encoded):
        plain.predictor.set_image(image)
        torch.testing.assert_close(enc["features"], plain.predictor.features, rtol=1e-4, atol=1e-4)
        ours = sorted((c.rle["counts"], c.area) for c in seg.generate(enc, image))
        theirs = sorted((a["segmentation"]["counts"], a["area"]) for a in plain.generate(image))
        assert ours == theirs and len(ours) == 48  # 16 points x 3 masks, nothing filtered
    assert seg.timings["encoder"] > 0 and seg.timings["decoder"] > 0


def test_default_filters_on_real_generator_output(tiny_sam_checkpoint):
    seg = build_segmenter("sam", _sam_cfg(tiny_sam_checkpoint), "cpu")
    image = phantom_rgb("pelvis", 256, 2)[0]
    kept = seg.generate(seg.encode([image])[0], image)
    # The random model's masks are noise spread over the whole image: the span filter drops
    # every one of them, and the counts say so.
    assert kept == []
    assert seg.dropped["span"] > 0 and sum(seg.dropped.values()) - seg.dropped["kept"] == 48


def _box_mask(h, w, x0, y0, x1, y1) -> Candidate:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    enc = rle.encode(m)
    return Candidate(rle=enc, area=int(m.sum()), bbox=tuple(rle.bbox_xywh(enc)), score=0.9)


FILTER = {
    "min_area_fraction": 0.001,
    "max_area_fraction": 0.6,
    "max_span_fraction": 0.95,
    "border_fraction": 0.08,
    "marker_max_area_fraction": 0.01,
    "dedup_iou": 0.85,
    "max_masks": 24,
}


def test_each_radiology_filter_drops_what_it_names():
    h = w = 200  # 40,000 px
    organ = _box_mask(h, w, 60, 60, 120, 140)
    near_copy = Candidate(**{**_box_mask(h, w, 60, 60, 120, 138).__dict__, "score": 0.5})
    cands = [
        organ,
        near_copy,  # IoU 0.975 with the organ, lower score
        _box_mask(h, w, 100, 100, 105, 105),  # 25 px < 0.001 * 40,000 = 40
        _box_mask(h, w, 0, 0, 200, 130),  # 65 % of the image
        _box_mask(h, w, 2, 2, 198, 198),  # spans the image (ring-like body outline, as a box here)
        _box_mask(h, w, 185, 5, 197, 20),  # small marker at the right border
        _box_mask(h, w, 90, 2, 110, 10),  # small text strip at the top border
        _box_mask(h, w, 90, 90, 100, 100),  # small but central: kept
    ]
    # The body-outline mask above is big; shrink its area below max_area so only the span rule fires.
    ring = np.zeros((h, w), bool)
    ring[2:198, 2:198] = True
    ring[10:190, 10:190] = False
    enc = rle.encode(ring)
    cands[4] = Candidate(rle=enc, area=int(ring.sum()), bbox=tuple(rle.bbox_xywh(enc)), score=0.9)
    kept, dropped = filter_masks(cands, (h, w), FILTER)
    assert [c.bbox for c in kept] == [organ.bbox, (90.0, 90.0, 10.0, 10.0)]
    assert dropped == {"min_area": 1, "max_area": 1, "span": 1, "border_marker": 2, "duplicate": 1}

    # null disables a filter; max_masks keeps the largest.
    kept, dropped = filter_masks(
        cands, (h, w), {**FILTER, "max_span_fraction": None, "dedup_iou": None, "max_masks": 2}
    )
    assert len(kept) == 2 and kept[0].area >= kept[1].area and dropped["max_masks"] == 2
    assert "span" not in dropped or dropped["span"] == 0


def test_dedup_keeps_the_higher_score():
    h = w = 100
    a = _box_mask(h, w, 10, 10, 60, 60)
    b = Candidate(**{**_box_mask(h, w, 10, 10, 60, 61).__dict__, "score": 0.99})
    kept, dropped = filter_masks([a, b], (h, w), {"dedup_iou": 0.85})
    assert kept == [b] and dropped == {"duplicate": 1}
    iou = mask_utils.iou(
        [{"size": a.rle["size"], "counts": a.rle["counts"].encode()}],
        [{"size": b.rle["size"], "counts": b.rle["counts"].encode()}],
        [0],
    )
    assert iou[0, 0] > 0.85


def test_checkpoint_of_another_architecture_is_named(tiny_sam_checkpoint):
    with pytest.raises(CheckpointError, match="does not fit the vit_b architecture"):
        load_sam_network("vit_b", tiny_sam_checkpoint)  # the tiny weights without the tiny arch
    cfg = _sam_cfg(tiny_sam_checkpoint)
    cfg["checkpoint"] = None
    with pytest.raises(CheckpointError, match="needs a SAM checkpoint"):
        build_segmenter("sam", cfg, "cpu")


@pytest.mark.parametrize(
    "settings", [TINY_SAM_GENERATOR, {**TINY_SAM_GENERATOR, "crop_n_layers": 1, "points_per_side": 2}]
)
def test_batched_rle_generator_gives_the_library_output(tiny_sam_checkpoint, settings):
    """Our generator (the point batches run-length encoded in one pass) returns exactly the
    library generator's annotations: masks, areas, boxes, scores, points, crops."""
    from loclens.segment.sam import BatchedRleGenerator

    net = load_sam_network("vit_b", tiny_sam_checkpoint, TINY_SAM_ARCH)
    theirs_gen = SamAutomaticMaskGenerator(net, output_mode="coco_rle", **settings)
    ours_gen = BatchedRleGenerator(net, output_mode="coco_rle", **settings)
    total = 0
    for image in (phantom_rgb("chest", 160, 1)[0][:, :130],):
        theirs, ours = theirs_gen.generate(image), ours_gen.generate(image)
        assert ours == theirs
        total += len(ours)
    assert total > 0


def test_automatic_masks_are_the_same_from_loader_processes(tiny_sam_checkpoint, tmp_path):
    """SAM's automatic mode through the runner: the image's pixels travel from the loader
    processes through shared memory; the masks equal those of an in-process run."""
    from PIL import Image

    from loclens.segment.run import segment_images

    rows = []
    for k, (region, size) in enumerate((("abdomen", 96), ("chest", 80))):
        path = tmp_path / f"{k}.png"
        Image.fromarray(phantom_rgb(region, size, k)[0]).save(path)
        rows.append({"image_id": f"img{k}", "path": str(path), "height": size, "width": size})
    no_filters = dict(NO_SAM_FILTER)
    cfg = _sam_cfg(tiny_sam_checkpoint, generator={**TINY_SAM_GENERATOR, "points_per_side": 2}, filter=no_filters)
    seg = build_segmenter("sam", cfg, "cpu")
    in_process = segment_images(seg, rows, {}, progress=False, workers=0)
    forked = segment_images(seg, rows, {}, progress=False, workers=2)
    assert [r["masks"] for r in forked] == [r["masks"] for r in in_process]
    assert sum(len(r["masks"]) for r in forked) > 0
