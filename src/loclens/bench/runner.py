"""Orchestrate ``loclens bench``: cut the image subset, run every stage in its own process
(worker.py), and gather the figures, the derived ratios and the scaling tables."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import schema, validate
from ..schema import SEGMENTERS
from .data import make_subset
from .report import derive

#: Folders a bench run writes in its work folder (see stages.py).
OWN_FOLDERS = ("data", "ingest", "segment", "release", "naive", "parquet", "specs")


@dataclass
class BenchOptions:
    vqa_rad: Path
    n_images: int = 8
    device: str = "auto"
    naive: bool = False
    #: "family" or "family/backend" names; None = every segmenter the registry knows.
    segmenters: list[str] | None = None
    #: A loclens configuration (as config.yaml) whose segment/render/release settings are used.
    config: dict | None = None
    max_prompts: int | None = None
    repeats: int = 3
    #: Images of the box-decoding micro-benchmark.
    box_images: int = 4
    #: Encoder batch sizes the box stage compares (None: stages.ENCODER_BATCHES_TRIED).
    encoder_batches: list[int] | None = None
    #: Samples the training reader is timed on.
    train_samples: int = 32
    #: Numbers of images for the "cost vs number of images" table (empty: skip it).
    scale_images: list[int] = field(default_factory=list)
    #: Longest image sides for the "cost vs image size" table (empty: skip it).
    scale_sides: list[int] = field(default_factory=list)
    #: ``null:ENC[+DEC]``: replace the box-prompted models by a stand-in of fixed latency and
    #: measure only whether the pipeline sustains its rate (pipeline.py).
    model: str | None = None
    #: Worker process counts the stand-in's pipeline stage compares.
    workers: list[int] = field(default_factory=lambda: [0, 1, 2])
    workdir: Path | None = None
    keep: bool = False
    quiet: bool = False


def log(opts: BenchOptions, message: str) -> None:
    if not opts.quiet:
        print(f"bench: {message}", file=sys.stderr, flush=True)


def segmenter_variants(selected: list[str] | None) -> list[dict]:
    """Every (family, backend) the config schema offers, i.e. what ``build_segmenter`` can be
    asked for; a new backend in the schema shows up here without changes."""
    props = schema()["properties"]["segment"]["properties"]
    out = []
    for family in SEGMENTERS:
        backends = props.get(family, {}).get("properties", {}).get("backend", {}).get("enum") or [None]
        for backend in backends:
            name = family if backend is None else f"{family}/{backend}"
            if selected is None or name in selected or family in selected:
                out.append({"family": family, "backend": backend, "name": name, "variant": name.replace("/", "-")})
    if selected is not None:
        unknown = set(selected) - {v["name"] for v in out} - {v["family"] for v in out}
        if unknown:
            raise ValueError(
                f"--segmenters: unknown {sorted(unknown)}; known: {[v['name'] for v in segmenter_variants(None)]}"
            )
    return out


def bench_config(opts: BenchOptions, data_dir: Path, work: Path, per_shard: int | None = None) -> dict:
    """The user's (or the default) configuration pointed at the subset; ``per_shard`` puts
    that many images in one segment shard and one release shard (the memory scaling runs)."""
    raw = copy.deepcopy(opts.config or {})
    raw["datasets"] = {"vqa_rad": {"path": str(data_dir)}}
    raw["results"] = str(work)
    raw["limit_images"] = None
    if opts.max_prompts is not None:
        raw.setdefault("segment", {}).setdefault("medsam", {})["max_prompts"] = opts.max_prompts
    if per_shard is not None:
        raw.setdefault("segment", {})["images_per_shard"] = per_shard
        raw.setdefault("release", {})["rows_per_shard"] = per_shard
    return validate(raw, source="bench configuration")


def run_stage(opts: BenchOptions, work: Path, label: str, spec: dict) -> dict:
    """Run one stage in a fresh Python process; its figures, or the error it stopped with."""
    specs = work / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    safe = label.replace("/", "-").replace(" ", "_")
    spec_path, result_path = specs / f"{safe}.json", specs / f"{safe}.result.json"
    spec_path.write_text(json.dumps({**spec, "work": str(spec.get("work", work))}, indent=1))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "loclens.bench.worker", str(spec_path), str(result_path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not result_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(opts, f"{label}: failed ({tail[0]})")
        return {"stage": spec["stage"], "error": tail[0]}
    log(opts, f"{label}: {time.perf_counter() - t0:.1f} s")
    return json.loads(result_path.read_text())


def machine(device: str) -> dict:
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _segment_spec(config: dict, opts: BenchOptions, variant: dict, stage: str) -> dict:
    return {
        "stage": stage,
        "config": config,
        "device": opts.device,
        "repeats": opts.repeats,
        "box_images": opts.box_images,
        "encoder_batches": opts.encoder_batches,
        **variant,
    }


def missing_weights(config: dict, variant: dict) -> str | None:
    """Why a (family, backend) cannot run here (its checkpoint is not on disk), or None."""
    from ..segment import checkpoints

    cfg = dict(config["segment"][variant["family"]])
    if variant["backend"] is not None:
        cfg["backend"] = variant["backend"]
    try:
        target = checkpoints.checkpoint_target(variant["family"], cfg, config["resources"])
    except checkpoints.CheckpointError as exc:
        return str(exc)
    if target is not None and not Path(target).is_file():
        return f"no checkpoint at {target}"
    return None


def build_stages(opts: BenchOptions, work: Path, config: dict, variants: list[dict], full: bool) -> dict:
    """ingest -> segment (every variant) -> render -> release, each in its own process;
    ``full`` adds the box micro-benchmark, the naive mode, the Parquet variants and the
    training reader (the scaling runs need only the build itself)."""
    results = {"ingest": run_stage(opts, work, "ingest", {"stage": "ingest", "config": config})}
    caches = {}
    for v in variants:
        missing = missing_weights(config, v)
        if missing:
            # A backend without weights on this machine cannot be measured; say so, not fail.
            log(opts, f"segment {v['name']}: skipped ({missing})")
            continue
        seg = run_stage(opts, work, f"segment {v['name']}", _segment_spec(config, opts, v, "segment"))
        results[f"segment {v['name']}"] = seg
        if "error" in seg:
            continue
        primary = v["backend"] in (None, config["segment"][v["family"]].get("backend"))
        if primary or v["family"] not in caches:
            caches[v["family"]] = v["variant"]
        if full:
            results[f"boxes {v['name']}"] = run_stage(
                opts, work, f"boxes {v['name']}", _segment_spec(config, opts, v, "boxes")
            )
            if opts.naive:
                results[f"naive {v['name']}"] = run_stage(
                    opts, work, f"naive {v['name']}", _segment_spec(config, opts, v, "naive")
                )
    if not caches:
        return results
    results["render"] = run_stage(opts, work, "render", {"stage": "render", "config": config, "caches": caches})
    results["release"] = run_stage(opts, work, "release", {"stage": "release", "config": config, "caches": caches})
    if full:
        results["parquet"] = run_stage(opts, work, "parquet", {"stage": "parquet", "repeats": opts.repeats})
        results["train"] = run_stage(
            opts, work, "train", {"stage": "train", "config": config, "samples": opts.train_samples}
        )
    return results


def stand_in_stages(opts: BenchOptions, work: Path, config: dict, variants: list[dict]) -> dict:
    """ingest, then per box-prompted variant the per-step CPU costs and the pipeline's rate at
    each worker count, with the network replaced by ``opts.model``."""
    results = {"ingest": run_stage(opts, work, "ingest", {"stage": "ingest", "config": config})}
    for v in variants:
        if v["family"] != "medsam":
            log(opts, f"{v['name']}: skipped (a stand-in replaces box-prompted models only)")
            continue
        spec = {**_segment_spec(config, opts, v, "steps"), "model": opts.model}
        results[f"steps {v['name']}"] = run_stage(opts, work, f"steps {v['name']}", spec)
        spec = {**spec, "stage": "pipeline", "workers": opts.workers}
        results[f"pipeline {v['name']}"] = run_stage(opts, work, f"pipeline {v['name']}", spec)
    return results


def scaling(opts: BenchOptions, work: Path, variants: list[dict]) -> dict:
    """Cost and peak memory of a build (ingest, segment, render) as the number of images and
    the image size grow. Each build puts all its images in one segment shard and one release
    shard per split, the worst case for memory."""
    primary = [v for v in variants if v["family"] == "medsam"][:1] or variants[:1]
    out: dict[str, list[dict]] = {"images": [], "image_size": []}
    for n in opts.scale_images:
        sub = work / f"scale-n{n}"
        make_subset(opts.vqa_rad, sub / "data", n)
        config = bench_config(opts, sub / "data", sub, per_shard=n)
        log(opts, f"scaling: {n} images")
        out["images"].append({"n_images": n, "stages": build_stages(opts, sub, config, primary, full=False)})
    n_side = min(opts.n_images, 8)
    for side in opts.scale_sides:
        sub = work / f"scale-side{side}"
        make_subset(opts.vqa_rad, sub / "data", n_side, max_side=side)
        config = bench_config(opts, sub / "data", sub, per_shard=n_side)
        log(opts, f"scaling: longest side {side} px ({n_side} images)")
        out["image_size"].append(
            {"max_side": side, "n_images": n_side, "stages": build_stages(opts, sub, config, primary, full=False)}
        )
    return out


def run_bench(opts: BenchOptions) -> dict:
    from ..segment import resolve_device
    from ..segment.standin import parse

    if opts.model:
        parse(opts.model)  # a malformed spec is an error before any work
    opts.device = resolve_device(opts.device)
    work = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="loclens-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in [*(work / d for d in OWN_FOLDERS), *work.glob("scale-*")]:
        shutil.rmtree(old, ignore_errors=True)  # results of an earlier run must not leak into this one
    try:
        variants = segmenter_variants(opts.segmenters)
        names = make_subset(opts.vqa_rad, work / "data", opts.n_images)
        config = bench_config(opts, work / "data", work)
        log(opts, f"{len(names)} VQA-RAD images in {work}, device {opts.device}")
        report = {
            "command": "loclens " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("loclens") else None,
            "machine": machine(opts.device),
            "n_images": len(names),
            "naive": opts.naive,
            "model": opts.model,
            "stages": stand_in_stages(opts, work, config, variants)
            if opts.model
            else build_stages(opts, work, config, variants, full=True),
        }
        if opts.scale_images or opts.scale_sides:
            report["scaling"] = scaling(opts, work, variants)
        report.update(derive(report))
        return report
    finally:
        if not opts.keep and not opts.workdir:
            shutil.rmtree(work, ignore_errors=True)
