"""Shared fixtures. Real data comes from tests/data/ (a small CC0 VQA-RAD subset, see its README), so
the suite needs nothing beside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: strict_skips: under CI=true a skipped test fails the run; pytester: tests of that plugin.
pytest_plugins = ["strict_skips", "pytester"]

REPO = Path(__file__).resolve().parents[1]
VQA_RAD = REPO / "tests" / "data" / "vqa_rad"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def vqa_rad_root() -> Path:
    """The vendored VQA-RAD subset (real release files, every reader quirk; tests/data/README.md)."""
    if not (VQA_RAD / "VQA_RAD Dataset Public.json").exists():
        pytest.fail(
            f"VQA-RAD test subset not found at {VQA_RAD}; make it with "
            "python tests/data/make_vqa_rad_subset.py --source PATH/TO/VQA-RAD",
            pytrace=False,
        )
    return VQA_RAD


@pytest.fixture(scope="session")
def litemedsam():
    from loclens.segment.litemedsam import LiteMedSAM

    return LiteMedSAM(device="cpu")


#: Whether the running test is marked slow (set before its fixtures, which may run Snakemake).
_RUNNING = {"slow": False}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _RUNNING["slow"] = item.get_closest_marker("slow") is not None


#: Segment jobs on one thread each: on a 2-core machine two jobs then run side by side, so one
#: job's model loading overlaps the other's inference (the workflow's default gives a segment
#: job every core, which serialises them).
SEGMENT_ONE_THREAD = ("--set-threads", "segment=1")


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (this repo's Snakefile) with ``workdir`` as working directory.
    Only tests marked slow may: the fast tier (``-m "not slow"``) never starts Snakemake."""
    if not _RUNNING["slow"]:
        raise AssertionError("run_snakemake in a test not marked slow: mark it (or its module) @pytest.mark.slow")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        logs = (
            "\n".join(p.read_text()[-3000:] for p in sorted((workdir / "results" / "logs").rglob("*.log")))
            if (workdir / "results" / "logs").exists()
            else ""
        )
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )
    return proc


#: A SAM architecture small enough for CPU tests (segment.sam.arch / segment.medsam.arch).
TINY_SAM_ARCH = {
    "image_size": 256,
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "window_size": 4,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}

#: Generator settings for the random tiny SAM: a 4x4 point grid, and no quality thresholds or
#: box NMS (random weights never pass SAM's defaults, and their masks all span the image).
TINY_SAM_GENERATOR = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


#: The SAM mask filter switched off (each null disables one rule of segment/sam_filter.py), so a
#: test sees the generator's own masks.
NO_SAM_FILTER = dict.fromkeys(
    ("min_area_fraction", "max_area_fraction", "max_span_fraction", "border_fraction", "dedup_iou", "max_masks")
)


def save_tiny_sam(path: Path, seed: int) -> Path:
    """A randomly initialised tiny SAM-architecture checkpoint (state dict) at ``path``."""
    import torch

    from loclens.segment.sam_models import build_sam_network

    torch.manual_seed(seed)
    torch.save(build_sam_network("vit_b", TINY_SAM_ARCH).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("ckpt") / "tiny_sam.pth", seed=0)


@pytest.fixture(scope="session")
def tiny_medsam_checkpoint(tmp_path_factory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("ckpt") / "tiny_medsam.pth", seed=1)


def phantom_rgb(region: str, size: int, seed: int):
    """A sample phantom as HxWx3 uint8 and its organ masks."""
    import numpy as np

    from loclens.sources.sample import _phantom

    gray, organs = _phantom(region, size, np.random.default_rng(seed))
    return np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=2), organs


@dataclass
class BuiltRelease:
    """A small release built in-process (sample phantoms, real LiteMedSAM, grouped split)."""

    root: Path
    config: dict
    release: Path
    ingest: Path  # folder with <dataset>/records.jsonl
    masks: list[Path]


def build_release(root: Path, config: dict, masks: list[Path] | None = None) -> BuiltRelease:
    """ingest -> segment (unless ``masks`` are given: reuse that cache) -> render -> release,
    with the same library calls the workflow's rules make."""
    from loclens.ingest import ensure_sample, run_ingest
    from loclens.plan import PLAN_FILE, mask_cache_name
    from loclens.release.finalize import finalize_release
    from loclens.shard_jobs import open_mask_caches, render_job, segment_job
    from loclens.stages import build_hash

    name = "sample"
    ensure_sample(name, config["datasets"][name], config)
    ingest = root / "results" / "ingest"
    plan = run_ingest(name, config, ingest / name)
    records = ingest / name / "records.jsonl"
    if masks is None:
        masks = [
            root / "results" / "segment" / name / "medsam" / mask_cache_name(k) for k in range(len(plan.segment_shards))
        ]
        for k in range(len(plan.segment_shards)):
            segment_job(plan, k, records, "medsam", config["segment"]["medsam"], masks[k], device="cpu")
    caches, infos = open_mask_caches({"medsam": masks})
    release = root / "results" / "release"
    for shard in plan.release_shards:
        render_job(shard, records, caches, infos, config["render"], config["seed"], build_hash(config, name), release)
    finalize_release(release, [ingest / name / PLAN_FILE], config, [str(m) for m in masks])
    return BuiltRelease(root, config, release, ingest, masks)


def small_config(root: Path, **overrides) -> dict:
    from loclens.config import validate

    raw = {
        "datasets": {"sample": {"n_images": 3}},
        "results": str(root / "results"),
        "resources": str(root / "resources"),
        "split": "grouped",
        "segment": {"images_per_shard": 8},
        "release": {"rows_per_shard": 1},
    }
    raw.update(overrides)
    return validate(raw)


@pytest.fixture(scope="session")
def small_release(tmp_path_factory) -> BuiltRelease:
    """Built once per session; tests that damage it work on a copy (:func:`copy_release`)."""
    root = tmp_path_factory.mktemp("small_release")
    return build_release(root, small_config(root))


def copy_release(built: BuiltRelease, dst: Path) -> Path:
    shutil.copytree(built.release, dst)
    return dst


@pytest.fixture(scope="session")
def train_release(tmp_path_factory, vqa_rad_root) -> Path:
    """A small real VQA-RAD release built by the real workflow (LiteMedSAM lens views): 5 images,
    2 rows per shard, so the train split has several shards (row-group units) and several QA
    per image. Returns the workflow's working directory; the release is in results/release."""
    workdir = tmp_path_factory.mktemp("train_release")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"vqa_rad": {"path": str(vqa_rad_root)}}
    config["limit_images"] = 5
    config["release"]["rows_per_shard"] = 2
    config["segment"]["images_per_shard"] = 3  # two segment jobs, run side by side
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--cores", "2", *SEGMENT_ONE_THREAD)
    return workdir


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    from tiny_models import tiny_vit

    return tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory) -> Path:
    from tiny_models import tiny_idefics3

    return tiny_idefics3(tmp_path_factory.mktemp("tiny_idefics3"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from tiny_models import tiny_llava

    return tiny_llava(tmp_path_factory.mktemp("tiny_llava"))
