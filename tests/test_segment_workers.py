"""The segment runner's worker processes and device post-processing change nothing: the same
masks (hence byte-identical release shards) whatever the number of workers and wherever the
masks are run-length encoded; RLE computed on the device equals pycocotools'; the stand-in model
has the backends' interface and output shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loclens.segment import build_segmenter, rle, standin
from loclens.segment import workers as seg_workers
from loclens.segment.prompts import Prompt
from loclens.segment.run import (
    image_masks,
    load_with_prompts,
    post_process,
    segment_images,
)

masks3 = st.tuples(st.integers(0, 4), st.integers(1, 16), st.integers(1, 16)).flatmap(lambda s: arrays(np.bool_, s))


@settings(max_examples=150, deadline=None)
@given(masks=masks3, size=st.one_of(st.none(), st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_device_rle_equals_pycocotools_of_the_resized_mask(masks, size):
    counts = seg_workers.device_rle_counts(torch.from_numpy(masks), size)
    assert len(counts) == len(masks)
    for mask, c in zip(masks, counts):
        target = size or mask.shape
        assert rle.from_counts(c, target) == rle.encode_resized(mask, target)
        assert (len(c) > 1) == bool(rle.decode(rle.encode_resized(mask, target)).any())  # one run: an empty mask


def test_plan_uses_the_jobs_cores(monkeypatch):
    monkeypatch.setattr(seg_workers, "shm_free_bytes", lambda: 64 * 2**30)
    gpu = seg_workers.plan(16, torch.device("cuda:0"))
    assert (gpu.loaders, gpu.post, gpu.torch_threads) == (15, 0, 1)
    cpu = seg_workers.plan(16, torch.device("cpu"))
    assert (cpu.loaders, cpu.post, cpu.torch_threads) == (2, 1, 16)
    assert seg_workers.plan(1, torch.device("cpu")).loaders == 1
    assert seg_workers.plan(8, "cpu", workers=0) == seg_workers.WorkerPlan(0, 0, 8)


def test_plan_fits_a_small_shared_memory(monkeypatch):
    item = seg_workers.ITEM_SHM_BYTES
    monkeypatch.setattr(seg_workers, "shm_free_bytes", lambda: 2 * 20 * item)  # 20 items in flight
    assert (seg_workers.plan(16, "cuda:0").loaders, seg_workers.plan(16, "cuda:0").prefetch) == (15, 1)
    monkeypatch.setattr(seg_workers, "shm_free_bytes", lambda: 2 * 6 * item)
    assert (seg_workers.plan(16, "cuda:0").loaders, seg_workers.plan(16, "cuda:0").prefetch) == (6, 1)
    monkeypatch.setattr(seg_workers, "shm_free_bytes", lambda: 64 * 2**20)  # a container's default
    assert seg_workers.plan(16, "cuda:0").loaders == 1
    monkeypatch.setattr(seg_workers, "shm_free_bytes", lambda: 0)
    assert seg_workers.plan(16, "cuda:0") == seg_workers.WorkerPlan(0, 0, 1, 1)


def test_stand_in_spec_is_checked():
    assert standin.parse("null:20") == (0.02, 0.0)
    assert standin.parse("null:18.5+13.2") == pytest.approx((0.0185, 0.0132))
    with pytest.raises(ValueError, match="null:ENC"):
        standin.parse("null:fast")
    with pytest.raises(ValueError, match="box-prompted"):
        build_segmenter("sam", {}, "cpu", stand_in="null:1")


@pytest.fixture(scope="module")
def sample_rows(tmp_path_factory):
    """Rows of the sample dataset's images (ingested for real)."""
    from conftest import small_config

    from loclens.ingest import ensure_sample, read_jsonl, run_ingest

    root = tmp_path_factory.mktemp("rows")
    config = small_config(root, datasets={"sample": {"n_images": 6}})
    ensure_sample("sample", config["datasets"]["sample"], config)
    run_ingest("sample", config, root / "ingest")
    rows = {r["image_id"]: r for r in read_jsonl(root / "ingest" / "records.jsonl")}
    return config, sorted(rows.values(), key=lambda r: r["image_id"])


def _old_path(segmenter, rows, cfg):
    """The runner before worker processes: one image at a time in this process, masks to the
    host, pycocotools RLE (``image_masks``)."""
    out = []
    for row in rows:
        image, prompts = load_with_prompts(row, cfg)
        enc = segmenter.encode([image])[0]
        out.append(image_masks(segmenter, enc, image, prompts, (row["height"], row["width"])))
    return out


def test_stand_in_masks_are_the_same_with_any_workers_and_post_processing(sample_rows):
    config, rows = sample_rows
    cfg = config["segment"]["medsam"]
    seg = build_segmenter("medsam", cfg, "cpu", stand_in="null:1+1")
    enc = seg.encode([np.zeros((30, 40, 3), np.uint8)])[0]
    assert enc.embedding.shape == (1, 256, 64, 64)
    masks, _ = seg.decode_device(enc, np.array([[2, 3, 10, 20]], np.float32))
    assert masks.shape == (1, 30, 40) and masks.dtype == torch.bool and int(masks.sum()) == 8 * 17
    runs = {
        (k, dev): [r["masks"] for r in segment_images(seg, rows, cfg, progress=False, workers=k, post_on_device=dev)]
        for k, dev in [(0, False), (2, False), (2, True)]
    }
    old = _old_path(seg, rows, cfg)
    assert sum(len(m) for m in old) > 0
    assert all(v == old for v in runs.values())


def test_post_process_on_the_device_scales_masks_made_on_a_reduced_copy():
    class Seg:
        name, model_name, checkpoint_sha256 = "medsam", "m", "0" * 64

    small = torch.zeros((2, 30, 40), dtype=torch.bool)
    small[0, 5:15, 10:30] = True  # the second mask is empty: not stored
    entries = post_process(
        Seg(), small, torch.tensor([0.9, 0.8]), [Prompt((10, 5, 30, 15), "a", "otsu")] * 2, (300, 400)
    )
    assert len(entries) == 1
    assert entries[0]["rle"] == rle.encode_resized(small[0].numpy(), (300, 400))
    assert entries[0]["prompt_box"] == [100.0, 50.0, 300.0, 150.0]


@pytest.mark.slow
def test_release_is_byte_identical_with_and_without_workers(tmp_path):
    """Real LiteMedSAM on the sample images: masks segmented in this process (workers=0), by
    worker processes, and run-length encoded "on the device" (the CUDA path, here on the CPU)
    equal the old runner's, and releases rendered from them have byte-identical shards."""
    from conftest import build_release, small_config

    from loclens.ingest import ensure_sample, run_ingest, shard_rows
    from loclens.segment.run import segmenter_info, write_masks

    config = small_config(tmp_path)
    ensure_sample("sample", config["datasets"]["sample"], config)
    plan = run_ingest("sample", config, tmp_path / "results" / "ingest" / "sample")
    records = tmp_path / "results" / "ingest" / "sample" / "records.jsonl"
    cfg = config["segment"]["medsam"]
    seg = build_segmenter("medsam", cfg, "cpu")
    shards, masks = {}, {}
    layouts = {
        "in-process": {"workers": 0},
        "workers": {"workers": 2},
        "device-rle": {"workers": 2, "post_on_device": True},
    }
    for name, kwargs in layouts.items():
        caches, masks[name] = [], []
        for k, ids in enumerate(plan.segment_shards):
            results = segment_images(seg, shard_rows(records, ids), cfg, progress=False, **kwargs)
            masks[name] += [r["masks"] for r in results]
            caches.append(tmp_path / name / f"shard-{k:05d}.parquet")
            write_masks(caches[-1], results, segmenter_info(seg, cfg))
        release = build_release(tmp_path, config, masks=caches).release
        shards[name] = {str(p.relative_to(release)): p.read_bytes() for p in sorted(release.rglob("*.parquet"))}
    rows = [r for ids in plan.segment_shards for r in shard_rows(records, ids)]
    assert masks["in-process"] == _old_path(seg, rows, cfg)
    assert sum(len(m) for m in masks["in-process"]) > 0 and shards["in-process"]
    assert masks["workers"] == masks["device-rle"] == masks["in-process"]
    assert shards["workers"] == shards["device-rle"] == shards["in-process"]


def test_a_loader_process_error_names_the_image(sample_rows, tmp_path):
    from loclens.imageio import ImageError

    config, rows = sample_rows
    cfg = config["segment"]["medsam"]
    seg = build_segmenter("medsam", cfg, "cpu", stand_in="null:1")
    bad = {**rows[1], "path": str(tmp_path / "gone.jpg")}
    with pytest.raises(ImageError, match="gone.jpg: image file not found"):
        segment_images(seg, [rows[0], bad, rows[2]], cfg, progress=False, workers=2)
