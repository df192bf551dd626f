"""``loclens bench`` on 2 real VQA-RAD images: the tool runs every stage (each in its own process,
the naive mode included) and produces every figure. A smoke test of the tool: it asserts that
the figures exist and are finite and positive (settings echoed back may be 0), never how fast anything is."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import BIN, REPO

pytestmark = pytest.mark.slow


def _numbers(obj, path=""):
    """(path, value) for every number in a nested figures dict."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")


def run_bench(*args: str) -> subprocess.CompletedProcess:
    """``loclens bench ARGS`` in a subprocess, with this checkout's package, offline."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loclens.cli", "bench", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory, vqa_rad_root):
    out = tmp_path_factory.mktemp("bench")
    report = out / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    cmd = [
        str(BIN / "loclens"),
        "bench",
        "--vqa-rad",
        str(vqa_rad_root),
        "--n-images",
        "2",
        "--naive",
        "--segmenters",
        "medsam",
        "--max-prompts",
        "2",
        "--repeats",
        "1",
        "--box-images",
        "1",
        "--encoder-batches",
        "1",
        "--train-samples",
        "4",
        "--workdir",
        str(out / "work"),
        "--json",
        str(report),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(report.read_text()), out / "work"


def test_every_stage_ran_and_every_figure_is_finite_and_positive(bench):
    _, report, _ = bench
    stages = report["stages"]
    expected = {
        "ingest",
        "segment medsam/litemedsam",
        "boxes medsam/litemedsam",
        "naive medsam/litemedsam",
        "render",
        "release",
        "parquet",
        "train",
    }
    assert expected <= set(stages), sorted(stages)
    for key, result in stages.items():
        assert "error" not in result, (key, result)
        numbers = dict(_numbers(result["figures"]))
        assert numbers, key
        for path, value in numbers.items():
            # Settings echoed into the figures (worker counts) and coverage counts may be 0.
            floor_ok = value >= 0 if path.endswith("num_workers") or ".coverage." in path else value > 0
            assert math.isfinite(value) and floor_ok, (key, path, value)
        memory = result["memory"]
        assert memory["peak_rss_mb"] >= memory["base_rss_mb"] > 0
        assert math.isfinite(memory["arrow_peak_mb"]) and memory["arrow_peak_mb"] >= 0, key
    # Stages that write or read Parquet allocate through Arrow's pool, so its peak is measured.
    for key in ("segment medsam/litemedsam", "render", "parquet", "train"):
        assert stages[key]["memory"]["arrow_peak_mb"] > 0, key

    # Coverage as the release manifest records it: both images have medsam views.
    cov = stages["release"]["figures"]["coverage"]
    assert cov["segmenters"] == ["medsam"] and cov["all"] == {"images": 2, "medsam": 2}
    assert sum(c["images"] for c in cov["regions"].values()) == 2
    seg = stages["segment medsam/litemedsam"]["figures"]
    assert seg["images"] == 2 and seg["masks_per_image"] > 0
    boxes = stages["boxes medsam/litemedsam"]["figures"]
    assert set(boxes["encoder_s_per_image_by_batch"]) == {"1"}  # --encoder-batches 1
    assert boxes["s_per_box_batched"] > 0 and boxes["s_per_box_one_at_a_time"] > 0
    # The test environment has the training stage (CI installs ".[test,train]"), so its
    # figures must be there.
    train = stages["train"]["figures"]
    assert train["available"] is True, train
    assert train["samples_per_s"] > 0
    assert train["samples"] >= 4  # --train-samples (counted after a warm-up batch)

    summary = report["summary"]
    assert summary["pipeline_own_share"] > 0 and summary["naive_speedup medsam/litemedsam"] > 0
    assert {t["target"] for t in report["targets"]} >= {
        "decoder: 8 prompts batched vs 1 prompt",
        "speed-up over the naive mode (segment + render)",
    }
    assert report["machine"]["device"] == "cpu" and report["n_images"] == 2
    # Each image's views are rendered once; a row of an image with QA in both official splits
    # (one of these two) copies them.
    render = stages["render"]["figures"]
    assert render["rows_with_copied_views"] == render["rows"] - report["n_images"] >= 1


def test_table_names_every_figure(bench):
    text, report, _ = bench
    for needle in (
        "images/s",
        "s per box",
        "Mpix/s",
        "MB/s",
        "peak RSS MB",
        "naive medsam/litemedsam",
        "targets:",
        "coverage by body region",
        "2 (100%)",
    ):
        assert needle in text, needle
    train_line = next(line for line in text.splitlines() if line.lstrip().startswith("train reader"))
    assert "n/a" not in train_line and "samples/s" in train_line, train_line


def test_naive_mode_writes_views_as_png_files_and_the_pipeline_parquet(bench):
    _, report, work = bench
    import datasets
    from PIL import Image

    views = sorted((work / "naive" / "medsam-litemedsam" / "views").glob("*.png"))
    masks = sorted((work / "naive" / "medsam-litemedsam" / "masks").glob("*.png"))
    assert len(views) == 3 * 2 and masks  # unicolor, multicolor, masked for each image
    for p in views:
        with Image.open(p) as im:
            im.load()
    shards = sorted((work / "release" / "vqa_rad").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    assert len(ds) == report["stages"]["render"]["figures"]["rows"]
    assert all(row["medsam_unicolor"] is not None for row in ds)


def test_unknown_segmenter_is_a_clear_error(vqa_rad_root, tmp_path):
    proc = run_bench(
        "--vqa-rad",
        str(vqa_rad_root),
        "--segmenters",
        "nope",
        "--workdir",
        str(tmp_path),
    )
    assert proc.returncode != 0 and "--segmenters: unknown ['nope']" in proc.stderr


def test_stand_in_model_measures_the_pipeline_around_it(vqa_rad_root, tmp_path):
    """``--model null:MS``: per-step CPU costs and the runner's rate at each worker count
    against the stand-in, on real images."""
    report = tmp_path / "bench.json"
    proc = run_bench(
        "--vqa-rad",
        str(vqa_rad_root),
        "--n-images",
        "3",
        "--model",
        "null:5+1",
        "--segmenters",
        "medsam/litemedsam",
        "--workers",
        "0,2",
        "--repeats",
        "1",
        "--workdir",
        str(tmp_path / "work"),
        "--json",
        str(report),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = json.loads(report.read_text())["stages"]
    steps = stages["steps medsam/litemedsam"]["figures"]
    assert set(steps["s_per_image"]) == {
        "read",
        "decode",
        "prompts",
        "prepare",
        "post_cpu_rle",
        "post_pipeline",
        "post_entries_from_counts",
    }
    assert all(v > 0 for v in steps["s_per_image"].values())
    pipeline = stages["pipeline medsam/litemedsam"]["figures"]
    assert pipeline["stand_in_images_per_s"] == pytest.approx(1 / 0.006)
    assert [r["workers"] for r in pipeline["runs"]] == [0, 2]
    assert all(0 < r["sustained_fraction"] <= 1 and r["masks_per_image"] > 0 for r in pipeline["runs"])
    assert "rate with model null:5+1" in proc.stdout and "box prompts" in proc.stdout
    bad = run_bench(
        "--vqa-rad",
        str(vqa_rad_root),
        "--model",
        "null:x",
        "--workdir",
        str(tmp_path / "bad"),
    )
    assert bad.returncode == 2 and "null:ENC" in bad.stderr
