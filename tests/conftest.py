"""Shared fixtures. Real data is read from ../shared (beside the checkout), never copied."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
VQA_RAD = REPO.parent / "shared" / "datasets" / "vqa_rad"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def vqa_rad_root() -> Path:
    if not (VQA_RAD / "VQA_RAD Dataset Public.json").exists():
        pytest.skip(f"real VQA-RAD release not found at {VQA_RAD}")
    return VQA_RAD


@pytest.fixture(scope="session")
def litemedsam():
    from loclens.segment.litemedsam import LiteMedSAM

    return LiteMedSAM(device="cpu")


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real workflow (this repo's Snakefile) with ``workdir`` as working directory."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        logs = "\n".join(p.read_text()[-3000:] for p in sorted((workdir / "results" / "logs").rglob("*.log"))) if (workdir / "results" / "logs").exists() else ""
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


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
    config["segment"]["images_per_shard"] = 5
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), "--cores", "2")
    return workdir


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    from tiny_models import tiny_vit

    return tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture(scope="session")
def tiny_idefics3(tmp_path_factory) -> Path:
    from tiny_models import tiny_idefics3

    return tiny_idefics3(tmp_path_factory.mktemp("tiny_idefics3"))
