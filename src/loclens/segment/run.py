"""Run one segmenter over one work shard of images and write the mask cache file."""

from __future__ import annotations

import json
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The prompt sources' image libraries, imported with the segment job rather than while its
# first image is prompted (prompts.py defers them so that loading the workflow stays light).
import scipy.ndimage  # noqa: F401
import skimage.filters  # noqa: F401
import skimage.measure  # noqa: F401
import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..imageio import load_rgb, read_bytes
from . import build_segmenter, resolve_device, rle
from .prompts import Prompt, prompt_context, prompts_for
from .workers import Done, PostPool, available_cpus, device_rle_counts, from_shared, loaded
from .workers import plan as workers_plan


def read_max_side(cfg: dict) -> int | None:
    """``segment.read_max_side`` (copied into each segmenter's settings by
    ``stages.segment_settings``). None, the default: segmenters see every image at full
    resolution and make its masks at that size, as the models' reference inference does. A
    number: larger images are reduced while being read, prompts and masks are made at that size
    and masks are scaled back to the image's size in RLE form (nearest-neighbour), so the memory
    of a segmentation job does not grow with the image."""
    return cfg.get("read_max_side")


#: Images sent through the encoder together, by device type. On a CPU a larger batch is no
#: faster per image (``loclens bench``'s box stage compares batch sizes; BENCHMARKS.md) and only
#: holds more decoded images; a GPU needs batches to fill it.
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
    assert prompts is not None, "a box-prompted segmenter needs the image's prompts"
    masks, scores = segmenter.decode(enc, np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4))
    return mask_entries(segmenter, masks, scores, prompts, size)


def entries_from_counts(
    segmenter,
    counts: list[list[int]],
    scores: np.ndarray,
    prompts: list[Prompt],
    working_hw: tuple[int, int],
    size: tuple[int, int],
) -> list[dict]:
    """``mask_entries`` from masks already run-length encoded at ``size`` (``device_rle_counts``);
    ``working_hw``: the size the masks were made at. A mask of one run is empty: not stored."""
    scale = (size[0] / working_hw[0], size[1] / working_hw[1])
    return [
        mask_entry(segmenter, rle.from_counts(c, size), score, prompt.label, prompt, scale)
        for c, score, prompt in zip(counts, scores, prompts)
        if len(c) > 1
    ]


def post_process(
    segmenter, masks: torch.Tensor, scores: torch.Tensor, prompts: list[Prompt], size: tuple[int, int]
) -> list[dict]:
    """Mask entries of one image's boolean masks (N x h x w) where they are: run-length encoded
    (and scaled to ``size``) on their device, only the run lengths copied back."""
    counts = device_rle_counts(masks, size)
    return entries_from_counts(
        segmenter, counts, scores.float().cpu().numpy(), prompts, (int(masks.shape[1]), int(masks.shape[2])), size
    )


@dataclass(frozen=True)
class _Provenance:
    """What ``mask_entry`` reads of a segmenter, sent to post-processing processes."""

    name: str
    model_name: str
    checkpoint_sha256: str


def _host_entries(provenance: _Provenance, masks, scores, prompts: list[Prompt], size: tuple[int, int]) -> list[dict]:
    """A post-processing worker's job: masks on the host -> RLE at ``size`` -> entries."""
    return mask_entries(provenance, from_shared(masks), from_shared(scores), prompts, size)


def _shape_only(h: int, w: int) -> np.ndarray:
    """An array with an image's shape and no pixels: what a box-prompted backend's ``encode``
    reads of an image once it has the preprocessed input (loaders send no pixels)."""
    return np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (h, w, 3))


def load_with_prompts(row: dict, prompt_cfg: dict, masks_seen: dict | None = None) -> tuple[np.ndarray, list[Prompt]]:
    """An image row's pixels as the segmenter sees them (see ``read_max_side``) and its box
    prompts from the configured sources."""
    image = load_rgb(read_bytes(row["path"]), row["path"], max_side=read_max_side(prompt_cfg))
    context = prompt_context(row, image.shape[:2], masks_seen)
    return image, prompts_for(image, prompt_cfg["prompts"], prompt_cfg, context=context)


def _loader(segmenter, cfg: dict, context_masks: dict, pixels: bool):
    """What a loader does for one row: decode the image, compute its box prompts (unless the
    segmenter is automatic) and the segmenter's CPU preprocessing. ``pixels``: also return the
    image (automatic segmenters need it; box-prompted ones only its shape)."""
    prepare = getattr(segmenter, "prepare", None)
    automatic = getattr(segmenter, "automatic", False)

    def load(row: dict) -> dict:
        masks_seen = {seg: by_id.get(row["image_id"], []) for seg, by_id in context_masks.items()}
        if automatic:
            image, prompts = load_rgb(read_bytes(row["path"]), row["path"], max_side=read_max_side(cfg)), None
        else:
            image, prompts = load_with_prompts(row, cfg, masks_seen)
        return {
            "image": image if pixels else None,
            "shape": image.shape[:2],
            "prompts": prompts,
            "prepared": prepare(image) if prepare else None,
        }

    return load


class _ImageMasks:
    """Where one image's masks are made after the encoder: the decoder, then the RLE on the
    device (CUDA), in a post-processing process (CPU) or, for automatic segmenters and backends
    without ``decode_device``, in this process. ``submit`` returns a result with ``get()``."""

    def __init__(self, segmenter, post_workers: int, post_on_device: bool | None):
        self.segmenter = segmenter
        automatic = getattr(segmenter, "automatic", False)
        self.decode_device = None if automatic else getattr(segmenter, "decode_device", None)
        on_cuda = segmenter.device.type == "cuda"
        self.on_device = self.decode_device is not None and (on_cuda if post_on_device is None else post_on_device)
        self.pool = PostPool(_host_entries, 0 if self.on_device or self.decode_device is None else post_workers)
        self.provenance = _Provenance(segmenter.name, segmenter.model_name, segmenter.checkpoint_sha256)

    def submit(self, enc, image: np.ndarray, prompts: list[Prompt] | None, size: tuple[int, int]):
        if self.decode_device is None:
            return Done(image_masks(self.segmenter, enc, image, prompts, size))
        assert prompts is not None, "a box-prompted segmenter needs the image's prompts"
        boxes = np.array([p.box for p in prompts], dtype=np.float32).reshape(-1, 4)
        masks, scores = self.decode_device(enc, boxes)
        if self.on_device:
            return Done(post_process(self.segmenter, masks, scores, prompts, size))
        return self.pool.apply(self.provenance, masks.cpu(), scores.float().cpu(), prompts, size)


def segment_images(
    segmenter,
    rows: list[dict],
    cfg: dict,
    context_masks: dict | None = None,
    progress: bool = True,
    workers: int | None = None,
    threads: int | None = None,
    post_on_device: bool | None = None,
) -> list[dict]:
    """Masks for each image row, in order. Loader processes decode, prompt and preprocess
    images while the model works on earlier ones; masks are post-processed on the device (CUDA)
    or in worker processes (CPU); see ``workers`` for the layout and the bounds on memory.
    ``context_masks`` (segmenter -> image_id -> masks) is what prompt sources may read, e.g.
    SAM's masks for the ``sam`` source. ``workers``: loader processes (None: from ``threads``,
    the job's cores; 0: threads of this process). ``post_on_device``: None = on CUDA."""
    plan = workers_plan(threads or available_cpus(), segmenter.device, workers)
    automatic = getattr(segmenter, "automatic", False)
    batch = encoder_batch(segmenter.device)
    load = _loader(segmenter, cfg, context_masks or {}, pixels=automatic or plan.loaders == 0)
    if plan.loaders:
        items = loaded(load, rows, plan.loaders, plan.prefetch)
    else:
        items = prefetched(load, rows, LOADER_THREADS, batch + LOADER_THREADS)
    after = _ImageMasks(segmenter, plan.post, post_on_device)
    out: list[dict] = []
    pending: deque = deque()  # (record, result with .get()) in row order

    with after.pool, tqdm(total=len(rows), desc=f"segment[{segmenter.name}]", disable=not progress) as bar:

        def collect(keep: int) -> None:
            while len(pending) > keep:
                record, result = pending.popleft()
                record["masks"] = result.get()
                out.append(record)
                bar.update(1)

        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            got = [next(items) for _ in chunk]
            images = [g["image"] if g["image"] is not None else _shape_only(*g["shape"]) for g in got]
            prepared = [g["prepared"] for g in got]
            enc0 = segmenter.timings["encoder"]
            encoded = segmenter.encode(images, prepared if prepared[0] is not None else None)
            enc_each = (segmenter.timings["encoder"] - enc0) / len(images)
            for row, g, image, enc in zip(chunk, got, images, encoded):
                d0 = segmenter.timings["decoder"]
                result = after.submit(enc, image, g["prompts"], (row["height"], row["width"]))
                record = {
                    "image_id": row["image_id"],
                    "masks": None,
                    "encoder_seconds": enc_each,
                    "decoder_seconds": segmenter.timings["decoder"] - d0,
                }
                pending.append((record, result))
                collect(after.pool.limit)
        collect(0)
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
    segmenter_name: str,
    cfg: dict,
    rows: list[dict],
    out_path,
    device: str = "auto",
    context_masks: dict | None = None,
    stand_in: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    set_torch_threads: bool = False,
) -> dict:
    """Segment the unique images of ``rows`` and write ``out_path``; returns timing figures.
    The model is loaded once and kept for the whole shard. ``threads``: the job's cores (None:
    the CPUs this process may use); ``workers``: loader processes (None: from ``threads``, see
    ``workers.plan``; 0: none). ``set_torch_threads``: give the model the plan's share of the
    cores (a segment job's own process; not for callers that share theirs)."""
    unique = list({r["image_id"]: r for r in rows}.values())
    unique.sort(key=lambda r: r["image_id"])
    t0 = time.perf_counter()
    resolved = resolve_device(device)
    if set_torch_threads:
        torch.set_num_threads(workers_plan(threads or available_cpus(), torch.device(resolved), workers).torch_threads)
    segmenter = build_segmenter(segmenter_name, cfg, resolved, stand_in=stand_in)
    load_s = time.perf_counter() - t0
    results = segment_images(segmenter, unique, cfg, context_masks, workers=workers, threads=threads)
    write_masks(Path(out_path), results, segmenter_info(segmenter, cfg))
    stats = {"images": len(unique), "device": resolved, "model_load_seconds": load_s, **segmenter.timings}
    if getattr(segmenter, "dropped", None) is not None:
        stats["sam_filter"] = dict(segmenter.dropped)
    return {**stats, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
