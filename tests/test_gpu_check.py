"""benchmarks/gpu_check.py (the script the lead runs once on a GPU) works on this CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_gpu_check_runs_both_modes_on_two_real_images(tmp_path, vqa_rad_root):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--images",
            str(vqa_rad_root),
            "--n",
            "2",
            "--tiny",
            "--segmenters",
            "sam,medsam,litemedsam",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())["results"]
    by = {(r["segmenter"], r["mode"]): r for r in results}
    assert set(by) == {(s, m) for s in ("sam", "medsam", "litemedsam") for m in ("ours", "naive")}
    for r in results:
        assert r["images"] == 2 and r["images_per_s"] > 0 and r["precision"] == "fp32"  # CPU: no autocast
    for name in ("medsam", "litemedsam"):
        assert by[(name, "ours")]["encoder_s_per_image"] > 0 and by[(name, "ours")]["decoder_s_per_image"] > 0
        # Same images, same prompts, same precision on the CPU: both modes produce the same masks.
        assert by[(name, "ours")]["masks_per_image"] == by[(name, "naive")]["masks_per_image"] > 0
    assert by[("sam", "ours")]["masks_per_image"] == by[("sam", "naive")]["masks_per_image"]
    for name in ("sam", "medsam", "litemedsam"):
        assert f"speed-up {name}: ours/naive = " in proc.stdout
