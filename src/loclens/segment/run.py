"""Run one segmenter over one work shard of images and write the mask cache file."""

from __future__ import annotations

import json
import os
import resource
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from ..schema import MASKS_CACHE_SCHEMA
from . import build_segmenter, resolve_device, rle
from .prompts import Prompt, prompt_context, prompts_for

#: Segmenters see images at most this many pixels per side (SAM and MedSAM work at 1024,
#: LiteMedSAM at 256): larger images are reduced while being read, prompts and masks are made
#: at that size, and masks are scaled back to the image's size in RLE form. So the memory of a
#: segmentation job does not grow with the image (a 6000x5000 scan costs what a 1024 one does),
#: and images up to this size are processed exactly as read.
WORK_MAX_SIDE = 1024
#: Images sent through the encoder together, by device type. On a CPU a larger batch is no
#: faster per image (measured by ``loclens bench``, see BENCHMARKS.md) and only holds more
#: decoded images; a GPU needs batches to fill it.
ENCODER_BATCH = {"cpu": 1, "cuda": 16}
#: Threads that decode images and compute their prompts ahead of the model, so that the model
#: never waits for the CPU work of the next images (one core is left to the model).
LOADER_THREADS = max(1, min(4, (os.cpu_count() or 2) - 1))


def encoder_batch(device) -> int:
    return ENCODER_BATCH.get(getattr(device, "type", str(device).split(":")[0]), 1)


def prefetched(fn: Callable, items: Iterable, workers: int, ahead: int) -> Iterator:
    """``fn(item)`` for each item, in order, computed by ``workers`` threads at most ``ahead``
    items in advance: a bounded number of results (decoded images) is ever held."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(fn, item) for _, item in zip(range(max(1, ahead)), items))
        while pending:
            result = pending.popleft().result()
            for item in items:
                pending.append(pool.submit(fn, item))
                break
            yield result


def mask_entries(
    segmenter, masks: np.ndarray, scores: np.ndarray, prompts: list[Prompt], size: tuple[int, int] | None = None
) -> list[dict]:
    """Cache entries of one image's masks, at ``size`` = the image's (height, width) when the
    masks were made on a reduced copy (boxes are scaled back to the image's pixels too)."""
    entries = []
    for mask, score, prompt in zip(masks, scores, prompts):
        if not mask.any():
            continue  # an empty mask carries no localization; not stored
        height, width = size or mask.shape
        sy, sx = height / mask.shape[0], width / mask.shape[1]
        encoded = rle.encode_resized(mask, (height, width))
        x0, y0, x1, y1 = prompt.box
        entries.append(
            {
                "segmenter": segmenter.name,
                "label": prompt.label,
                "prompt_source": prompt.source,
                "rle": encoded,
                "bbox": rle.bbox_xywh(encoded),
                "prompt_box": [float(x0 * sx), float(y0 * sy), float(x1 * sx), float(y1 * sy)],
                "score": float(score),
                "area": rle.area(encoded),
                "model": segmenter.model_name,
                "checkpoint_sha256": segmenter.checkpoint_sha256,
            }
        )
    return entries


def load_with_prompts(row: dict, prompt_cfg: dict) -> tuple[np.ndarray, list[Prompt]]:
    """An image row's pixels as the segmenter sees them (at most WORK_MAX_SIDE per side) and its
    box prompts from the configured sources."""
    image = load_rgb(read_bytes(row["path"]), row["path"], max_side=WORK_MAX_SIDE)
    context = prompt_context(row, image.shape[:2])
    return image, prompts_for(image, prompt_cfg["prompts"], prompt_cfg, context=context)


def segment_images(segmenter, rows: list[dict], prompt_cfg: dict, progress: bool = True) -> list[dict]:
    """Masks for each image row. Images are decoded and prompted by loader threads while the
    model works on earlier ones; at most a few batches of decoded images are held."""
    out = []
    batch = encoder_batch(segmenter.device)
    loaded = prefetched(lambda r: load_with_prompts(r, prompt_cfg), rows, LOADER_THREADS, batch + LOADER_THREADS)
    with tqdm(total=len(rows), desc=f"segment[{segmenter.name}]", disable=not progress) as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            images, prompts = zip(*[next(loaded) for _ in chunk])
            enc0 = segmenter.timings["encoder"]
            encoded = segmenter.encode(list(images))
            enc_each = (segmenter.timings["encoder"] - enc0) / len(images)
            for row, image_prompts, enc in zip(chunk, prompts, encoded):
                d0 = segmenter.timings["decoder"]
                boxes = np.array([p.box for p in image_prompts], dtype=np.float32).reshape(-1, 4)
                masks, scores = segmenter.decode(enc, boxes)
                out.append(
                    {
                        "image_id": row["image_id"],
                        "masks": mask_entries(segmenter, masks, scores, image_prompts, (row["height"], row["width"])),
                        "encoder_seconds": enc_each,
                        "decoder_seconds": segmenter.timings["decoder"] - d0,
                    }
                )
                bar.update(1)
    return out


def segmenter_info(segmenter, cfg: dict) -> dict:
    """Provenance of a segmenter run, stored in the cache file and copied into every row."""
    return {
        "segmenter": segmenter.name,
        "backend": segmenter.backend,
        "model": segmenter.model_name,
        "checkpoint": Path(segmenter.checkpoint).name,
        "checkpoint_sha256": segmenter.checkpoint_sha256,
        "prompt_sources": list(cfg.get("prompts", [])),
    }


def write_masks(path, results: list[dict], info: dict) -> None:
    schema = MASKS_CACHE_SCHEMA.with_metadata({"loclens_segmenter": json.dumps(info, sort_keys=True)})
    table = pa.Table.from_pylist(results, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def run_segment_shard(segmenter_name: str, cfg: dict, rows: list[dict], out_path, device: str = "auto") -> dict:
    """Segment the unique images of ``rows`` and write ``out_path``; returns timing figures."""
    unique = list({r["image_id"]: r for r in rows}.values())
    unique.sort(key=lambda r: r["image_id"])
    t0 = time.perf_counter()
    segmenter = build_segmenter(segmenter_name, cfg, resolve_device(device))
    load_s = time.perf_counter() - t0
    results = segment_images(segmenter, unique, cfg)
    write_masks(Path(out_path), results, segmenter_info(segmenter, cfg))
    return {"images": len(unique), "model_load_seconds": load_s, **segmenter.timings, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
