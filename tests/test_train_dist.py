"""Two processes under torchrun (gloo, CPU): each rank reads its own part of the release, and
DDP keeps the ranks' weights identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO

from loclens.train import ReleaseDataset, open_release

pytestmark = pytest.mark.slow


def test_two_ranks_read_disjoint_shares_and_train_in_lockstep(train_release, tiny_vit, tmp_path):
    release_dir = train_release / "results" / "release"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(REPO / "tests" / "dist_probe.py"),
        str(release_dir),
        str(tmp_path),
        str(tiny_vit),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]

    release = open_release(release_dir)
    unit_of = {}
    for u, unit in enumerate(release.units):
        for image_id in release.read(unit, ["image_id"]).column("image_id").to_pylist():
            unit_of[image_id] = u
    for phase in ("align", "vqa"):
        total = len(ReleaseDataset(release, phase, transform=lambda s: None))
        keys = [[k for b in r["batches"][phase] for k in b["keys"]] for r in reports]
        assert len(keys[0]) == len(keys[1]) == total // 2  # equal shares: DDP steps in lockstep
        assert not set(keys[0]) & set(keys[1]) and len(set(keys[0])) == len(keys[0])
        units_read, workers_used = [], []
        for r in reports:
            by_worker = defaultdict(set)
            for b in r["batches"][phase]:
                by_worker[b["worker"]] |= {unit_of[i] for i in b["image_ids"]}
            assert not by_worker[0] & by_worker[1]  # the two workers never read the same row group
            units_read.append(by_worker[0] | by_worker[1])
            workers_used.append(len(by_worker))
        # Contiguous shares: only a row group on the boundary between the ranks is read by both.
        assert len(units_read[0] & units_read[1]) <= 1
        assert sum(len(u) for u in units_read) <= len(release.units) + 1
        if phase == "vqa":
            assert max(workers_used) == 2  # 17 questions per rank span two row groups: both workers read
    assert reports[0]["steps"] == reports[1]["steps"] == 2
    assert reports[0]["losses"] == reports[1]["losses"]  # all-reduced mean loss
    assert reports[0]["param_sum"] == pytest.approx(reports[1]["param_sum"], rel=1e-6, abs=1e-6)
    assert (tmp_path / "align" / "final" / "model.safetensors").is_file()
