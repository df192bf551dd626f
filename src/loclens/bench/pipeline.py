"""Stages of ``loclens bench --model null:MS``: does the pipeline keep up with a model of a given
speed? The network is replaced by a stand-in of fixed latency (``segment.standin``), so what is
measured is everything around it, on real VQA-RAD images:

- ``steps``: the CPU cost per image of every non-model step, each timed alone in one process
  (read, decode, prompts, the backend's preprocessing, mask post-processing + RLE + entries);
- ``pipeline``: the segment runner over the images with K worker processes for each K of
  ``--workers``: images/s against the stand-in's own rate (its latencies alone).

Both call the runner's own functions, so the figures are those of a segment job.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from ..segment import build_segmenter, resolve_device
from ..segment import run as runner
from .stages import plan_and_records, segmenter_cfg, stage, sync, unique_rows


def _segmenter(spec: dict):
    device = resolve_device(spec["device"])
    return build_segmenter(spec["family"], segmenter_cfg(spec), device, stand_in=spec.get("model")), device


def _best_of(repeats: int, fn, *args) -> tuple[float, Any]:
    """The best wall time of ``fn(*args)`` over ``repeats`` calls, and its result."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


@stage("steps", imports=("loclens.segment.run",))
def steps_stage(spec: dict) -> dict:
    """Per-image seconds of each step around the model, summed over the images (best of
    ``repeats`` per image and step), single-threaded."""
    import torch

    from ..imageio import load_rgb, read_bytes
    from ..segment.prompts import prompt_context, prompts_for

    torch.set_num_threads(1)  # one worker's view: each step on one core
    segmenter, device = _segmenter(spec)
    cfg = segmenter_cfg(spec)
    _, records = plan_and_records(spec)
    rows = unique_rows(records)
    repeats = spec.get("repeats", 3)
    post = getattr(runner, "post_process", None)  # the pipeline's post-processing, where it has one
    totals: dict[str, float] = {}
    masks_n = 0

    def add(key: str, seconds: float) -> None:
        totals[key] = totals.get(key, 0.0) + seconds

    for row in rows:
        t, data = _best_of(repeats, read_bytes, row["path"])
        add("read", t)
        t, image = _best_of(repeats, load_rgb, data, row["path"], runner.read_max_side(cfg))
        add("decode", t)
        context = prompt_context(row, image.shape[:2], {})
        t, prompts = _best_of(repeats, prompts_for, image, cfg["prompts"], cfg, context)
        add("prompts", t)
        t, prepared = _best_of(repeats, segmenter.prepare, image)
        add("prepare", t)
        enc = segmenter.encode([image], [prepared])[0]
        boxes = np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4)
        masks, scores = segmenter.decode_device(enc, boxes)
        sync(device)
        size = (row["height"], row["width"])
        host = masks.cpu().numpy()
        host_scores = scores.cpu().numpy()
        t, entries = _best_of(repeats, runner.mask_entries, segmenter, host, host_scores, prompts, size)
        add("post_cpu_rle", t)  # masks on the host -> pycocotools RLE (+ resize) -> entries
        if post is not None:
            t, _ = _best_of(repeats, post, segmenter, masks, scores, prompts, size)
            add("post_pipeline", t)  # the runner's own post-processing of device masks
            counts = runner.device_rle_counts(masks, size)
            t, _ = _best_of(
                repeats,
                runner.entries_from_counts,
                segmenter,
                counts,
                host_scores,
                prompts,
                tuple(masks.shape[1:]),
                size,
            )
            add("post_entries_from_counts", t)  # its host part on a GPU: run lengths -> COCO RLE -> entries
        masks_n += len(entries)
    n = len(rows)
    per_image = {k: v / n for k, v in totals.items()}
    loader = sum(per_image[k] for k in ("read", "decode", "prompts", "prepare"))
    return {
        "images": n,
        "device": device,
        "model": spec.get("model"),
        "masks_per_image": masks_n / n,
        "s_per_image": per_image,
        "loader_s_per_image": loader,
    }


@stage("pipeline", imports=("loclens.segment.run",))
def pipeline_stage(spec: dict) -> dict:
    """The runner over every image with each worker count; rates against the stand-in's."""
    segmenter, device = _segmenter(spec)
    cfg = segmenter_cfg(spec)
    _, records = plan_and_records(spec)
    rows = unique_rows(records)
    takes_workers = "workers" in inspect.signature(runner.segment_images).parameters
    counts = spec.get("workers") or [None]
    nominal = getattr(segmenter, "encoder_s", 0.0) + getattr(segmenter, "decoder_s", 0.0)
    runs: list[dict] = []
    for k in counts if takes_workers else [None]:
        kwargs = {"workers": k} if takes_workers and k is not None else {}
        for _ in range(2 if not runs else 1):  # the first round also warms caches and imports
            before = dict(segmenter.timings)
            t0, cpu0 = time.perf_counter(), time.process_time()
            out = runner.segment_images(segmenter, rows, cfg, progress=False, **kwargs)
            sync(device)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        model = sum(segmenter.timings[key] - before[key] for key in segmenter.timings)
        n = len(rows)
        runs.append(
            {
                "workers": k if takes_workers else "threads (main's runner)",
                "images": n,
                "seconds": seconds,
                "images_per_s": n / seconds,
                "model_images_per_s": n / model if model else None,
                "sustained_fraction": model / seconds if seconds else None,
                # CPU time of the job's own process (its threads, not the worker processes'),
                # model calls included: with a stand-in, what the process that drives the
                # model spends besides waiting, the serial part of the pipeline.
                "main_cpu_s_per_image": cpu / n,
                "masks_per_image": sum(len(r["masks"]) for r in out) / n,
            }
        )
    return {
        "device": device,
        "model": spec.get("model"),
        "stand_in_images_per_s": 1 / nominal if nominal else None,
        "runs": runs,
    }
