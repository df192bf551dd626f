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
# The prompt sources' image libraries, imported with the segment job rather than while its
# first image is prompted (prompts.py defers them so that loading the workflow stays light).
import scipy.ndimage  # noqa: F401
import skimage.filters  # noqa: F401
import skimage.measure  # noqa: F401
from tqdm import tqdm

from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from . import build_segmenter, resolve_device, rle
from .prompts import Prompt, prompt_context, prompts_for


def read_max_side(cfg: dict) -> int | None:
    """``segment.read_max_side`` (copied into each segmenter's settings by
    ``stages.segment_settings``). None, the default: segmenters see every image at full
    resolution and make its masks at that size, as the models' reference inference does. A
    number: larger images are reduced while being read, prompts and masks are made at that size
    and masks are scaled back to the image's size in RLE form (nearest-neighbour), so the memory
    of a segmentation job does not grow with the image."""
    return cfg.get("read_max_side")


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


def mask_entry(segmenter, encoded: dict, score: float, label: str, prompt: Prompt | None, scale=(1.0, 1.0)) -> dict:
    """One stored mask (the `masks` struct of schema.FEATURES) with the segmenter's provenance; ``scale`` =
    (sy, sx) maps the prompt box from the reduced working image back to the image's pixels."""
    sy, sx = scale
    box = None
    if prompt is not None:
        x0, y0, x1, y1 = prompt.box
        box = [float(x0 * sx), float(y0 * sy), float(x1 * sx), float(y1 * sy)]
    return {
        "segmenter": segmenter.name,
        "label": label,
        "prompt_source": prompt.source if prompt else None,
        "rle": encoded,
        "bbox": rle.bbox_xywh(encoded),
        "prompt_box": box,
        "score": float(score),
        "area": rle.area(encoded),
        "model": segmenter.model_name,
        "checkpoint_sha256": segmenter.checkpoint_sha256,
    }


def mask_entries(
    segmenter, masks: np.ndarray, scores: np.ndarray, prompts: list[Prompt], size: tuple[int, int] | None = None
) -> list[dict]:
    """Entries of one image's box-prompted masks, at ``size`` = the image's (height, width)
    when the masks were made on a reduced working copy. An empty mask carries no
    localization; it is not stored."""
    entries = []
    for mask, score, prompt in zip(masks, scores, prompts):
        if mask.any():
            full = size or mask.shape
            scale = (full[0] / mask.shape[0], full[1] / mask.shape[1])
            entries.append(mask_entry(segmenter, rle.encode_resized(mask, full), score, prompt.label, prompt, scale))
    return entries


def image_masks(segmenter, enc, image: np.ndarray, prompts: list[Prompt] | None, size: tuple[int, int]) -> list[dict]:
    """The stored masks of one encoded image (automatic ones, or one per prompt box), at
    ``size`` = the image's (height, width) when ``image`` is a reduced working copy."""
    if getattr(segmenter, "automatic", False):
        return [
            mask_entry(segmenter, rle.encode_resized(rle.decode(c.rle), size), c.score, f"{segmenter.name}-{k}", None)
            for k, c in enumerate(segmenter.generate(enc, image))
        ]
    masks, scores = segmenter.decode(enc, np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4))
    return mask_entries(segmenter, masks, scores, prompts, size)


def load_with_prompts(row: dict, prompt_cfg: dict, masks_seen: dict | None = None) -> tuple[np.ndarray, list[Prompt]]:
    """An image row's pixels as the segmenter sees them (see ``read_max_side``) and its box
    prompts from the configured sources."""
    image = load_rgb(read_bytes(row["path"]), row["path"], max_side=read_max_side(prompt_cfg))
    context = prompt_context(row, image.shape[:2], masks_seen)
    return image, prompts_for(image, prompt_cfg["prompts"], prompt_cfg, context=context)


def _loader(segmenter, cfg: dict, context_masks: dict):
    """What a loader thread does for one row: decode the image, compute its box prompts (unless
    the segmenter is automatic) and the segmenter's CPU preprocessing."""
    prepare = getattr(segmenter, "prepare", None)
    automatic = getattr(segmenter, "automatic", False)

    def load(row: dict):
        masks_seen = {seg: by_id.get(row["image_id"], []) for seg, by_id in context_masks.items()}
        if automatic:
            image, prompts = load_rgb(read_bytes(row["path"]), row["path"], max_side=read_max_side(cfg)), None
        else:
            image, prompts = load_with_prompts(row, cfg, masks_seen)
        return image, prompts, (prepare(image) if prepare else None)

    return load


def segment_images(
    segmenter, rows: list[dict], cfg: dict, context_masks: dict | None = None, progress: bool = True
) -> list[dict]:
    """Masks for each image row. Loader threads decode, prompt and preprocess images while the
    model works on earlier ones; at most a few batches of decoded images are held.
    ``context_masks`` (segmenter -> image_id -> masks) is what prompt sources may read, e.g.
    SAM's masks for the ``sam`` source."""
    out = []
    batch = encoder_batch(segmenter.device)
    load = _loader(segmenter, cfg, context_masks or {})
    loaded = prefetched(load, rows, LOADER_THREADS, batch + LOADER_THREADS)
    with tqdm(total=len(rows), desc=f"segment[{segmenter.name}]", disable=not progress) as bar:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            images, prompts, prepared = zip(*[next(loaded) for _ in chunk])
            enc0 = segmenter.timings["encoder"]
            encoded = segmenter.encode(list(images), list(prepared) if prepared[0] is not None else None)
            enc_each = (segmenter.timings["encoder"] - enc0) / len(images)
            for row, image, image_prompts, enc in zip(chunk, images, prompts, encoded):
                d0 = segmenter.timings["decoder"]
                entries = image_masks(segmenter, enc, image, image_prompts, (row["height"], row["width"]))
                out.append(
                    {
                        "image_id": row["image_id"],
                        "masks": entries,
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
    # Imported here: schema needs `datasets`, which segmenting itself does not (benchmarks run
    # this module on bare GPU machines).
    from ..schema import MASKS_CACHE_SCHEMA

    schema = MASKS_CACHE_SCHEMA.with_metadata({"loclens_segmenter": json.dumps(info, sort_keys=True)})
    table = pa.Table.from_pylist(results, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def run_segment_shard(
    segmenter_name: str, cfg: dict, rows: list[dict], out_path, device: str = "auto", context_masks: dict | None = None
) -> dict:
    """Segment the unique images of ``rows`` and write ``out_path``; returns timing figures.
    The model is loaded once and kept for the whole shard."""
    unique = list({r["image_id"]: r for r in rows}.values())
    unique.sort(key=lambda r: r["image_id"])
    t0 = time.perf_counter()
    resolved = resolve_device(device)
    segmenter = build_segmenter(segmenter_name, cfg, resolved)
    load_s = time.perf_counter() - t0
    results = segment_images(segmenter, unique, cfg, context_masks)
    write_masks(Path(out_path), results, segmenter_info(segmenter, cfg))
    stats = {"images": len(unique), "device": resolved, "model_load_seconds": load_s, **segmenter.timings}
    if getattr(segmenter, "dropped", None) is not None:
        stats["sam_filter"] = dict(segmenter.dropped)
    return {**stats, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
