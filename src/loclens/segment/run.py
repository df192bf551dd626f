"""Run one segmenter over one work shard of images and write the mask cache file."""

from __future__ import annotations

import json
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from . import build_segmenter, resolve_device, rle
from .prompts import Prompt, prompt_context, prompts_for

#: Images sent through the encoder together.
ENCODER_BATCH = 4
#: Segmenters see images at most this many pixels per side (SAM and MedSAM work at 1024,
#: LiteMedSAM at 256): larger images are reduced while being read, prompts and masks are made
#: at that size, and masks are scaled back to the image's size in RLE form. So the memory of a
#: segmentation job does not grow with the image (a 6000x5000 scan costs what a 1024 one does),
#: and images up to this size are processed exactly as read.
WORK_MAX_SIDE = 1024


def mask_entry(segmenter, encoded: dict, score: float, label: str, prompt: Prompt | None, scale=(1.0, 1.0)) -> dict:
    """One stored mask (schema.MASK_FEATURE) with the segmenter's provenance; ``scale`` =
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


def image_masks(segmenter, enc, image: np.ndarray, cfg: dict, context: dict, size: tuple[int, int]) -> list[dict]:
    """The stored masks of one encoded image (automatic ones, or one per prompt box), at
    ``size`` = the image's (height, width) when ``image`` is a reduced working copy."""
    if getattr(segmenter, "automatic", False):
        return [
            mask_entry(segmenter, rle.encode_resized(rle.decode(c.rle), size), c.score, f"{segmenter.name}-{k}", None)
            for k, c in enumerate(segmenter.generate(enc, image))
        ]
    prompts = prompts_for(image, cfg["prompts"], cfg, context)
    masks, scores = segmenter.decode(enc, np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4))
    return mask_entries(segmenter, masks, scores, prompts, size)


def _loader(segmenter):
    """Decode a batch of images and run the segmenter's CPU preprocessing (in the loader thread)."""
    prepare = getattr(segmenter, "prepare", None)

    def load(rows: list[dict]):
        images = [load_rgb(read_bytes(r["path"]), r["path"], max_side=WORK_MAX_SIDE) for r in rows]
        return images, ([prepare(img) for img in images] if prepare else None)

    return load


def segment_images(
    segmenter, rows: list[dict], cfg: dict, context_masks: dict | None = None, progress: bool = True
) -> list[dict]:
    """Masks for each image row. Images are decoded and preprocessed in a thread while the
    model works on the previous batch; ``context_masks`` (segmenter -> image_id -> masks) is
    what prompt sources may read, e.g. SAM's masks for the ``sam`` source."""
    out = []
    context_masks = context_masks or {}
    load = _loader(segmenter)
    batches = [rows[i : i + ENCODER_BATCH] for i in range(0, len(rows), ENCODER_BATCH)]
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
        total=len(rows), desc=f"segment[{segmenter.name}]", disable=not progress
    ) as bar:
        pending = pool.submit(load, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            images, prepared = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(load, batches[k + 1])
            enc0 = segmenter.timings["encoder"]
            encoded = segmenter.encode(images, prepared)
            enc_each = (segmenter.timings["encoder"] - enc0) / len(images)
            for row, image, enc in zip(batch, images, encoded):
                masks_seen = {seg: by_id.get(row["image_id"], []) for seg, by_id in context_masks.items()}
                context = prompt_context(row, image.shape[:2], masks_seen)
                d0 = segmenter.timings["decoder"]
                entries = image_masks(segmenter, enc, image, cfg, context, (row["height"], row["width"]))
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
