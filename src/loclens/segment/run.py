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
from ..schema import MASKS_CACHE_SCHEMA
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


def _load(row: dict) -> np.ndarray:
    return load_rgb(read_bytes(row["path"]), row["path"], max_side=WORK_MAX_SIDE)


def segment_images(segmenter, rows: list[dict], prompt_cfg: dict, progress: bool = True) -> list[dict]:
    """Masks for each image row; images are decoded in a thread while the model works."""
    out = []
    batches = [rows[i : i + ENCODER_BATCH] for i in range(0, len(rows), ENCODER_BATCH)]
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
        total=len(rows), desc=f"segment[{segmenter.name}]", disable=not progress
    ) as bar:
        pending = pool.submit(lambda b: [_load(r) for r in b], batches[0]) if batches else None
        for k, batch in enumerate(batches):
            images = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(lambda b: [_load(r) for r in b], batches[k + 1])
            enc0 = segmenter.timings["encoder"]
            encoded = segmenter.encode(images)
            enc_each = (segmenter.timings["encoder"] - enc0) / len(images)
            for row, image, enc in zip(batch, images, encoded):
                prompts = prompts_for(image, prompt_cfg["prompts"], prompt_cfg, context=prompt_context(row, image.shape[:2]))
                d0 = segmenter.timings["decoder"]
                masks, scores = segmenter.decode(enc, np.array([p.box for p in prompts], dtype=np.float32))
                out.append(
                    {
                        "image_id": row["image_id"],
                        "masks": mask_entries(segmenter, masks, scores, prompts, (row["height"], row["width"])),
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
