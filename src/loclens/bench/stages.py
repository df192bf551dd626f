"""The measured stages of ``loclens bench``. Each is a function ``spec -> figures`` that the
worker runs in a fresh process (so its memory peak is its own); they pass data to each other
through files in the bench work folder, in the workflow's formats:

    <work>/data/                       the VQA-RAD subset (real images)
    <work>/ingest/vqa_rad/             records.jsonl, rejects.jsonl, plan.json
    <work>/segment/<variant>/          mask caches, one per work shard
    <work>/release/vqa_rad/            release shards
    <work>/naive/<variant>/            the naive mode's mask and view PNG files

Every stage calls the pipeline's own functions (the ones the workflow rules call), so the
figures are those of a real build.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..plan import MASK_CACHE_GLOB, PLAN_FILE, RECORDS_FILE, Plan, mask_cache_name, read_plan

if TYPE_CHECKING:  # numpy is imported by the stages that use it
    import numpy as np

DATASET = "vqa_rad"

#: Stage name -> function(spec) -> figures (dict of numbers, strings or nested dicts).
STAGES: dict[str, Callable[[dict], dict]] = {}
#: Stage name -> modules the worker imports before measuring, so that import costs do not
#: count as the stage's memory.
STAGE_IMPORTS: dict[str, tuple[str, ...]] = {}


def stage(name: str, imports: tuple[str, ...] = ()):
    def register(fn):
        STAGES[name] = fn
        STAGE_IMPORTS[name] = imports
        return fn

    return register


# --- helpers shared by the stages -------------------------------------------------------------


def work(spec: dict) -> Path:
    return Path(spec["work"])


def plan_and_records(spec: dict) -> tuple[Plan, Path]:
    folder = work(spec) / "ingest" / DATASET
    return read_plan(folder / PLAN_FILE), folder / RECORDS_FILE


def segmenter_cfg(spec: dict) -> dict:
    """The variant's config section: the config's own, with the variant's backend."""
    segment = spec["config"]["segment"]
    cfg = {**segment[spec["family"]], "read_max_side": segment.get("read_max_side")}
    if spec.get("backend"):
        cfg["backend"] = spec["backend"]
    return cfg


def unique_rows(records: Path, limit: int | None = None) -> list[dict]:
    from ..ingest import read_records

    rows = sorted({r["image_id"]: r for r in read_records(records)}.values(), key=lambda r: r["image_id"])
    return rows[:limit] if limit else rows


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class TimedIter:
    """Wraps an iterator and adds up the time spent producing its items."""

    def __init__(self, items: Iterator | None = None):
        self.items, self.seconds = iter(()) if items is None else items, 0.0

    def __call__(self, items: Iterator) -> TimedIter:
        """Time ``items`` from now on (a ``wrap`` for ``shard_jobs.render_job``)."""
        self.items = items
        return self

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - t0


def per(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def mb(nbytes: float) -> float:
    return nbytes / 2**20


# --- stages ------------------------------------------------------------------------------------


@stage("ingest", imports=("loclens.ingest",))
def ingest_stage(spec: dict) -> dict:
    """The ingest reader over the subset: parse, hash and fully decode every image once."""
    from ..ingest import run_ingest

    t0 = time.perf_counter()
    plan = run_ingest(DATASET, spec["config"], work(spec) / "ingest" / DATASET)
    seconds = time.perf_counter() - t0
    n = sum(len(s) for s in plan.segment_shards)
    return {"images": n, "seconds": seconds, "images_per_s": per(n, seconds), "s_per_image": seconds / n}


# `datasets`: the mask cache's Arrow schema is built from the release Features when the job
# writes it; like the model, a job pays that import once, outside the per-image figures.
@stage("segment", imports=("loclens.ingest", "loclens.segment.run", "pyarrow.parquet", "datasets"))
def segment_stage(spec: dict) -> dict:
    """One segment job per work shard, as the workflow runs them (the model loaded per job)."""
    import pyarrow.parquet as pq

    from ..shard_jobs import segment_job

    plan, records = plan_and_records(spec)
    out = work(spec) / "segment" / spec["variant"]
    wall = load = enc = dec = net_dec = 0.0
    n = 0
    device = spec["device"]
    for k in range(len(plan.segment_shards)):
        t0 = time.perf_counter()
        stats = segment_job(
            plan, k, records, spec["family"], segmenter_cfg(spec), out / mask_cache_name(k), device=device
        )
        wall += time.perf_counter() - t0
        load += stats["model_load_seconds"]
        enc += stats["encoder"]
        dec += stats["decoder"]
        net_dec += stats.get("mask_decoder", stats["decoder"])
        n += stats["images"]
        device = stats.get("device", device)
    masks = sum(
        sum(len(m) for m in pq.read_table(p, columns=["masks"]).column("masks").to_pylist())
        for p in sorted(out.glob(MASK_CACHE_GLOB))
    )
    seconds = wall - load  # model loading is reported apart: a cluster job pays it once per shard
    other = max(seconds - enc - dec, 0.0)
    return {
        "images": n,
        "device": device,
        "masks_per_image": masks / n,
        "model_load_s": load,
        "seconds": seconds,
        "images_per_s": per(n, seconds),
        "s_per_image": seconds / n,
        "encoder_s_per_image": enc / n,
        "decoder_s_per_image": dec / n,
        "model_seconds": enc + dec,
        # The rate the model alone allows (encoder + decoder time) and the share of it the
        # pipeline sustains (1: the model never waits for the CPU side).
        # SAM: the mask decoder's calls only, not the generator's post-processing around them.
        "model_bound_images_per_s": per(n, enc + net_dec),
        "model_bound_fraction": (enc + net_dec) / seconds if seconds > 0 else 0.0,
        # Decoding images, prompts, RLE and the cache write: the pipeline's own work in this stage
        # (what the loader thread overlaps with the model is not counted).
        "other_seconds": other,
        "other_s_per_image": other / n,
    }


#: Encoder batch sizes the box stage compares, by device type (a CPU sweep is expensive, and a
#: CPU gains nothing per image from large batches: ``segment.run.ENCODER_BATCH``).
ENCODER_BATCHES_TRIED = {"cpu": [1, 2], "cuda": [1, 4, 16, 32]}


def _eight_boxes(prompts, shape) -> np.ndarray:
    """Eight real prompt boxes of the image, cycled when it has fewer (a decoder's cost does
    not depend on where a box is); a centred box when the prompt source found none."""
    import numpy as np

    boxes = [p.box for p in prompts]
    if not boxes:
        h, w = shape
        boxes = [(w / 4, h / 4, 3 * w / 4, 3 * h / 4)]
    return np.array([boxes[i % len(boxes)] for i in range(8)], dtype=np.float32)


@stage("boxes", imports=("loclens.segment.run",))
def boxes_stage(spec: dict) -> dict:
    """Encoder batch sizes (on as many images as the largest batch), and box decoding one
    prompt vs eight batched vs eight one at a time on the first ``box_images`` images; each
    timing is the best of ``repeats`` interleaved rounds."""
    from ..segment import build_segmenter, resolve_device
    from ..segment.run import load_with_prompts

    device = resolve_device(spec["device"])
    cfg = segmenter_cfg(spec)
    segmenter = build_segmenter(spec["family"], cfg, device)
    _, records = plan_and_records(spec)
    batches = spec.get("encoder_batches") or ENCODER_BATCHES_TRIED["cuda" if device.startswith("cuda") else "cpu"]
    rows = unique_rows(records, max(spec.get("box_images", 4), max(batches)))
    loaded = [load_with_prompts(r, cfg) for r in rows]  # as the segment stage reads and prompts them
    images = [image for image, _ in loaded]
    repeats = spec.get("repeats", 3)
    sizes = [b for b in batches if b <= len(images)] or [1]
    sweep = images[: max(sizes)]  # every batch size encodes the same images

    def encode_all(batch: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(sweep), batch):
            segmenter.encode(sweep[i : i + batch])
        sync(device)
        return (time.perf_counter() - t0) / len(sweep)

    segmenter.encode(images[:1])  # warm-up: first-call allocations and kernel selection
    best = {b: float("inf") for b in sizes}
    for r in range(repeats):
        for b in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:  # rotate the order per round
            best[b] = min(best[b], encode_all(b))
    images = images[: spec.get("box_images", 4)]
    n = len(images)
    figures = {
        "device": device,
        "images": n,
        "encoder_sweep_images": len(sweep),
        "encoder_s_per_image_by_batch": {str(b): s for b, s in best.items()},
        "best_encoder_batch": min(best, key=lambda b: best[b]),
    }
    if getattr(segmenter, "automatic", False) or not hasattr(segmenter, "decode"):
        return figures  # an automatic segmenter has no box prompts to time

    encoded = [segmenter.encode([img])[0] for img in images]
    boxes = [_eight_boxes(prompts, img.shape[:2]) for img, prompts in loaded[:n]]

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    one = batched = single = 0.0
    for enc, bx in zip(encoded, boxes):
        segmenter.decode(enc, bx)  # warm-up for this image size
        t1 = t8 = t8x1 = float("inf")
        for _ in range(repeats):
            t1 = min(t1, timed(lambda enc=enc, bx=bx: segmenter.decode(enc, bx[:1])))
            t8 = min(t8, timed(lambda enc=enc, bx=bx: segmenter.decode(enc, bx)))
            t8x1 = min(t8x1, timed(lambda enc=enc, bx=bx: [segmenter.decode(enc, b[None]) for b in bx]))
        one, batched, single = one + t1, batched + t8, single + t8x1
    enc1 = best[1] if 1 in best else min(best.values())
    flops_1, flops_8 = (decoder_gflop(segmenter, encoded[0], boxes[0][:k]) for k in (1, 8))
    figures.update(
        {
            "decode_1_prompt_s": one / n,
            "decode_8_batched_s": batched / n,
            "decode_8_one_at_a_time_s": single / n,
            "s_per_box_batched": batched / n / 8,
            "s_per_box_one_at_a_time": single / n / 8,
            "batched_8_vs_1_prompt": batched / one,
            "one_at_a_time_vs_batched": single / batched,
            # Segmenting an image with 8 boxes vs with 1 (one encoder pass either way).
            "image_8_vs_1_prompt": (enc1 + batched / n) / (enc1 + one / n),
            # The work itself (matmul and convolution FLOPs counted by torch): the floor of
            # the time ratio wherever the decoder is compute-bound, as on a CPU.
            "decoder_gflop_1_prompt": flops_1,
            "decoder_gflop_8_prompts": flops_8,
            "decoder_flop_ratio_8_vs_1": flops_8 / flops_1,
        }
    )
    return figures


def decoder_gflop(segmenter, encoded, boxes) -> float:
    """GFLOPs of one ``decode`` call, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        segmenter.decode(encoded, boxes)
    return counter.get_total_flops() / 1e9


@stage("render", imports=("loclens.ingest", "loclens.release.shards", "loclens.stages"))
def render_stage(spec: dict) -> dict:
    """Render every release shard of the plan, streaming rows into the Parquet writer; the time
    spent producing rows (render) and writing them (Parquet) is split."""
    from ..shard_jobs import open_mask_caches, render_job
    from ..stages import build_hash

    config = spec["config"]
    plan, records = plan_and_records(spec)
    caches, infos = open_mask_caches(
        {
            family: sorted((work(spec) / "segment" / variant).glob(MASK_CACHE_GLOB))
            for family, variant in spec["caches"].items()
        }
    )
    config_hash = build_hash(config, DATASET)
    release = work(spec) / "release"
    rows_n = pixels = nbytes = copied = 0
    render_s = total_s = 0.0
    for shard in plan.release_shards:
        produced = TimedIter()
        t0 = time.perf_counter()
        done = render_job(
            shard, records, caches, infos, config["render"], config["seed"], config_hash, release, wrap=produced
        )
        total_s += time.perf_counter() - t0
        render_s += produced.seconds
        rows_n += done.written
        pixels += sum(r["width"] * r["height"] for r in done.rows if r["image_id"] not in done.copied)
        copied += len(done.copied)
        nbytes += (release / shard.file).stat().st_size
    write_s = total_s - render_s
    return {
        "caches": spec["caches"],
        "rows": rows_n,
        "shards": len(plan.release_shards),
        "seconds": total_s,
        "s_per_row": total_s / rows_n,
        "render_s_per_row": render_s / rows_n,
        # Rows of an image rendered by an earlier shard (official split: an image in both
        # splits) copy its views; render time includes those copies, megapixels count
        # only the rows rendered.
        "rows_with_copied_views": copied,
        "render_mpix_per_s": per(pixels / 1e6, render_s),
        "write_seconds": write_s,
        "write_mb_per_s": per(mb(nbytes), write_s),
        "release_mb": mb(nbytes),
    }


@stage("parquet", imports=("loclens.release.shards",))
def parquet_stage(spec: dict) -> dict:
    """The largest release shard's rows written with our Parquet settings and two alternatives
    (all through one ``pq.write_table`` call, so only the settings differ), then read back; and
    written by the release's own writer (streamed by row group, atomic: temp file, fsync,
    rename). Best of ``repeats`` interleaved rounds. Reads come from the page cache (the file
    was just written), so they measure Parquet decoding, not the disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..release.shards import ROW_GROUP_ROWS, parquet_options, write_shard
    from ..schema import arrow_schema

    shards = sorted((work(spec) / "release").rglob("*.parquet"), key=lambda p: (-p.stat().st_size, str(p)))
    rows = pq.read_table(shards[0]).to_pylist()
    schema = arrow_schema()
    out = work(spec) / "parquet"
    out.mkdir(exist_ok=True)

    def write_table(**options):
        return lambda p: pq.write_table(
            pa.Table.from_pylist(rows, schema=schema), p, row_group_size=ROW_GROUP_ROWS, **options
        )

    variants = {
        "loclens_settings": write_table(**parquet_options(schema)),
        "pyarrow_defaults": write_table(),  # snappy and dictionaries everywhere
        "zstd_everything": write_table(compression="zstd"),
        "release_writer": lambda p: write_shard(p, iter(rows)),  # loclens settings, streamed, atomic
    }
    write_best = {k: float("inf") for k in variants}
    read_best = {k: float("inf") for k in variants}
    for _ in range(spec.get("repeats", 3)):
        for name, write in variants.items():
            path = out / f"{name}.parquet"
            t0 = time.perf_counter()
            write(path)
            write_best[name] = min(write_best[name], time.perf_counter() - t0)
            t0 = time.perf_counter()
            pq.read_table(path)
            read_best[name] = min(read_best[name], time.perf_counter() - t0)
    sizes = {k: (out / f"{k}.parquet").stat().st_size for k in variants}
    return {
        "rows": len(rows),
        "write_mb_per_s": per(mb(sizes["release_writer"]), write_best["release_writer"]),
        "read_mb_per_s": per(mb(sizes["release_writer"]), read_best["release_writer"]),
        "variants": {
            k: {
                "mb": mb(sizes[k]),
                "write_s": write_best[k],
                "read_s": read_best[k],
                "write_mb_per_s": per(mb(sizes[k]), write_best[k]),
                "read_mb_per_s": per(mb(sizes[k]), read_best[k]),
            }
            for k in variants
        },
    }


@stage("release", imports=("loclens.release.finalize",))
def release_stage(spec: dict) -> dict:
    """The release's last step: stale shards, rejects, dataset card (view counts streamed row
    group by row group) and the manifest (sha256 of every shard, coverage by body region)."""
    from ..release.finalize import finalize_release

    plan_path = work(spec) / "ingest" / DATASET / PLAN_FILE
    caches = sorted(str(p) for v in spec["caches"].values() for p in (work(spec) / "segment" / v).glob(MASK_CACHE_GLOB))
    release = work(spec) / "release"
    t0 = time.perf_counter()
    manifest = finalize_release(release, [plan_path], spec["config"], caches)
    seconds = time.perf_counter() - t0
    rows = sum(s["rows"] for d in manifest["datasets"].values() for s in d["splits"].values())
    nbytes = sum(p.stat().st_size for p in release.rglob("*.parquet"))
    return {
        "rows": rows,
        "seconds": seconds,
        "s_per_row": seconds / rows,
        "mb_per_s": per(mb(nbytes), seconds),
        # What the segmenters covered, as the manifest records it (not a timing).
        "coverage": manifest["datasets"][DATASET].get("coverage"),
    }


@stage("train", imports=())
def train_stage(spec: dict) -> dict:
    """The training reader (row-group reads, image decoding, view choice, the vision tower's
    preprocessing, collation) over the finished release, when the training stage is installed."""
    import importlib.util

    if importlib.util.find_spec("loclens.train") is None:
        return {"available": False, "reason": "training stage not installed"}
    from ..train import default_settings  # an installed but broken training stage is an error
    from ..train.bench import reader_throughput

    settings = default_settings(seed=spec["config"]["seed"])
    release = work(spec) / "release"
    result = reader_throughput(str(release), spec.get("samples", 32), settings, "align")
    return {
        "available": True,
        **{k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    }
