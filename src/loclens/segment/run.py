"""Run one segmenter over one work shard of images and write the mask cache file."""

from __future__ import annotations

import json
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


def mask_entry(segmenter, encoded: dict, score: float, area: int, label: str, prompt: Prompt | None) -> dict:
    """One stored mask (schema.MASK_FEATURE) with the segmenter's provenance."""
    return {
        "segmenter": segmenter.name,
        "label": label,
        "prompt_source": prompt.source if prompt else None,
        "rle": encoded,
        "bbox": rle.bbox_xywh(encoded),
        "prompt_box": [float(v) for v in prompt.box] if prompt else None,
        "score": float(score),
        "area": int(area),
        "model": segmenter.model_name,
        "checkpoint_sha256": segmenter.checkpoint_sha256,
    }


def mask_entries(segmenter, masks: np.ndarray, scores: np.ndarray, prompts: list[Prompt]) -> list[dict]:
    # An empty mask carries no localization; it is not stored.
    return [
        mask_entry(segmenter, rle.encode(mask), score, mask.sum(), prompt.label, prompt)
        for mask, score, prompt in zip(masks, scores, prompts)
        if mask.any()
    ]


def image_masks(segmenter, enc, image: np.ndarray, cfg: dict, context: dict) -> list[dict]:
    """The stored masks of one encoded image: automatic ones, or one per prompt box."""
    if getattr(segmenter, "automatic", False):
        return [
            mask_entry(segmenter, c.rle, c.score, c.area, f"{segmenter.name}-{k}", None)
            for k, c in enumerate(segmenter.generate(enc, image))
        ]
    prompts = prompts_for(image, cfg["prompts"], cfg, context)
    masks, scores = segmenter.decode(enc, np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4))
    return mask_entries(segmenter, masks, scores, prompts)


def _loader(segmenter):
    """Decode a batch of images and run the segmenter's CPU preprocessing (in the loader thread)."""
    prepare = getattr(segmenter, "prepare", None)

    def load(rows: list[dict]):
        images = [load_rgb(read_bytes(r["path"]), r["path"]) for r in rows]
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
                context = prompt_context(row, masks_seen)
                d0 = segmenter.timings["decoder"]
                entries = image_masks(segmenter, enc, image, cfg, context)
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
    return stats
