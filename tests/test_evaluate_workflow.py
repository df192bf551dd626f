"""The CPU-sized evaluation end to end through the real workflow: a small real VQA-RAD release,
two cells (a MedSAM-lens model and the paper's baseline without lens: InfoNCE, no pixel shuffle),
two seeds, a few training steps per phase, answering on original images, Tables 1-3 (Markdown,
CSV, JSON) and the gain plot. The default grid (the paper's eight Table 3 rows, three seeds) is
left to the unit tests: here the config narrows it to keep the run short.

``MODEL`` (environment ``LOCLENS_TEST_EVAL_MODEL``) picks the `train.model` the cells train:
``vlm`` (the default: the paper's method in a tiny randomly initialised Idefics3, the lens fused
in its vision path, answers generated) or ``contrastive`` (the CPU model, ranking answers)."""

from __future__ import annotations

import csv
import json
import math
import os
import re

import pytest
import yaml
from conftest import REPO, run_snakemake

from loclens.evaluate.analysis import score_predictions
from loclens.evaluate.answer import candidate_answers, iter_rows, read_predictions
from loclens.evaluate.metrics import normalize_answer

pytestmark = pytest.mark.slow

#: Main (with lens) and baseline (without), in Table 3 order: the baseline is added first.
CELLS = ("lens-none/p1-infonce/shuffle-off", "lens-medsam/p1-dcl/shuffle-on")
MAIN, BASELINE = CELLS[1], CELLS[0]
SEEDS = (0, 1)
MODEL = os.environ.get("LOCLENS_TEST_EVAL_MODEL", "vlm")
# Each rule gets one thread so two runs train side by side on two cores.
ONE_THREAD = ["--set-threads", *(f"{r}=1" for r in ("experiment_align", "experiment_vqa", "experiment_evaluate"))]


def _model_settings(models: dict) -> dict:
    """The train: settings of the model under test (tiny, random, from a local folder)."""
    if MODEL == "contrastive":
        return {
            "model": "contrastive",
            "embed_dim": 32,
            "vision": {"backend": "hf", "path": str(models["tiny_vit"]), "freeze": True},
        }
    if MODEL == "vlm":
        # fusion_heads must divide the tiny vision width (32); a few new tokens keep generation short.
        return {
            "model": "vlm",
            "fusion_heads": 2,
            "embed_dim": 32,
            "vlm": {"model": str(models["tiny_idefics3"]), "max_new_tokens": 4},
        }
    raise ValueError(f"LOCLENS_TEST_EVAL_MODEL={MODEL!r}: choose vlm or contrastive")


def _config(release, models, vqa_rad_root, seeds=SEEDS) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"vqa_rad": {"path": str(vqa_rad_root)}}
    config["train"].update(
        release=str(release),
        device="cpu",
        batch_size=4,
        connector={"pixel_shuffle": True, "factor": 2},
        align={"loss": "dcl", "max_steps": 2},
        vqa={"loss": "infonce", "max_steps": 2},
        **_model_settings(models),
    )
    config["evaluate"].update(
        seeds=list(seeds),
        main={"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True},
        baseline={"phase1_loss": "infonce", "pixel_shuffle": False},
        grid={"mode": "cells", "cells": [{"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True}]},
    )
    return config


@pytest.fixture(scope="module")
def models(request) -> dict:
    """The tiny model folder of MODEL (built only for the model under test)."""
    name = {"contrastive": "tiny_vit", "vlm": "tiny_idefics3"}[MODEL]
    return {name: request.getfixturevalue(name)}


def _jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[-1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
        if m.group(1) != "total"
    }


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, train_release, models, vqa_rad_root):
    workdir = tmp_path_factory.mktemp("evaluation")
    release = train_release / "results" / "release"
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(release, models, vqa_rad_root)))
    run_snakemake(workdir, "evaluation", "--configfile", str(cfg), "--cores", "2", *ONE_THREAD)
    return workdir, cfg, release


def test_every_cell_and_seed_answers_every_test_question_among_training_answers(evaluation):
    workdir, _, release = evaluation
    test_qa = {qa["qid"]: qa for row in iter_rows(release, "vqa_rad", "test", with_image=False) for qa in row["qa"]}
    candidates = candidate_answers(release, "vqa_rad", "train")
    assert test_qa and candidates["closed"]
    for cell in CELLS:
        for seed in SEEDS:
            run = workdir / "results" / "experiments" / cell / f"seed-{seed}"
            preds = read_predictions(run / "predictions" / "vqa_rad.jsonl")
            assert sorted(p["qid"] for p in preds) == sorted(test_qa)
            for p in preds:
                qa = test_qa[p["qid"]]
                assert (p["answer"], p["answer_type"]) == (qa["answer"], qa["answer_type"])
                if MODEL == "vlm":
                    assert p["method"] == "generate" and isinstance(p["prediction"], str)
                    assert p["score"] is None and p["top_k"] == [] and p["in_candidates"] is None
                    continue
                # Ranked among the training answers of the question's own answer type.
                assert p["prediction"] in candidates[p["answer_type"]] and p["method"] == "rank"
                assert p["score"] == p["top_k"][0]["score"] and len(p["top_k"]) == min(
                    5, len(candidates[p["answer_type"]])
                )
                assert p["in_candidates"] == (
                    normalize_answer(qa["answer"]) in {normalize_answer(a) for a in candidates[p["answer_type"]]}
                )
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["cell"] == cell and metrics["seed"] == seed
            # metrics.json is exactly the scoring of the predictions written beside it.
            assert metrics["metrics"] == json.loads(json.dumps(score_predictions(preds)))
            assert metrics["metrics"]["combined"]["all"]["n_questions"] == len(test_qa)


def _run_metrics(workdir, cell) -> list[dict]:
    """metrics.json of each seed of a cell, in seed order."""
    return [
        json.loads((workdir / "results" / "experiments" / cell / f"seed-{s}" / "metrics.json").read_text())["metrics"]
        for s in SEEDS
    ]


def test_tables_and_plot_cover_the_grid(evaluation):
    workdir, _, _ = evaluation
    out = workdir / "results" / "evaluation"
    tables = json.loads((out / "tables.json").read_text())
    assert tables["order"] == list(CELLS) and set(tables["cells"]) == set(CELLS) and tables["seeds"] == list(SEEDS)
    assert tables["main"] == {"cell": MAIN, "baseline": BASELINE}
    per_seed = {cell: _run_metrics(workdir, cell) for cell in CELLS}
    for cell in CELLS:
        # Each aggregate holds exactly the per-seed values of that cell's runs, in seed order.
        agg = tables["cells"][cell]["scopes"]["vqa_rad"]["all"]["closed_accuracy"]
        assert agg["values"] == [m["datasets"]["vqa_rad"]["all"]["closed_accuracy"] for m in per_seed[cell]]
        assert agg["n"] == len(SEEDS)
    (entry,) = tables["localization"]
    assert entry["cell"] == MAIN and entry["baseline"] == BASELINE and entry["seeds"] == list(SEEDS)
    gain = entry["scopes"]["vqa_rad"]["all"]["open_recall"]
    lens = [m["datasets"]["vqa_rad"]["all"]["open_recall"] for m in per_seed[MAIN]]
    base = [m["datasets"]["vqa_rad"]["all"]["open_recall"] for m in per_seed[BASELINE]]
    assert gain["gain"]["values"] == pytest.approx([l_ - b for l_, b in zip(lens, base)])

    # Every table names the seeds; Table 1 names both models, Table 3 has one row per cell.
    for stem in ("table1_main", "table2_localization", "table3_ablation"):
        text = (out / f"{stem}.md").read_text()
        assert "over 2 seeds ([0, 1])" in text and "Fewer than 3 seeds" in text, stem
    table1 = (out / "table1_main.md").read_text()
    assert f"without lens (`{BASELINE}`)" in table1 and f"with lens (`{MAIN}`)" in table1
    assert "| model | vqa_rad Open | vqa_rad Closed |" in table1
    table3 = (out / "table3_ablation.md").read_text()
    assert "|  |  |  | InfoNCE | off | 2 |" in table3 and "|  | ✓ |  | DCL | on | 2 |" in table3
    # The CSV's figures are the JSON aggregates in percent.
    with open(out / "table1_main.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == [f"without lens (`{BASELINE}`)", f"with lens (`{MAIN}`)", "gain"]
    assert float(rows[2]["vqa_rad Open mean"]) == pytest.approx(100 * gain["gain"]["mean"], abs=1e-4)
    assert int(rows[2]["vqa_rad Open n"]) == gain["gain"]["n"]
    assert (out / "gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adding_a_seed_adds_only_that_seeds_jobs(evaluation, models, vqa_rad_root):
    workdir, _, release = evaluation
    more = workdir / "config_more_seeds.yaml"
    more.write_text(yaml.safe_dump(_config(release, models, vqa_rad_root, seeds=(0, 1, 2))))
    dry = run_snakemake(workdir, "--configfile", str(more), "--cores", "2", "-n", "evaluation")
    jobs = _jobs(dry.stdout + dry.stderr)
    assert jobs == {
        "experiment_align": 2,
        "experiment_vqa": 2,
        "experiment_evaluate": 2,
        "tables": 1,
        "evaluation": 1,
    }, jobs


def test_each_cell_trains_the_model_its_grid_factors_say(evaluation):
    """Every run's phases carry the cell's factors: lens views (none for the baseline), the
    phase-1 loss, and for the lens VLM the image-token count of its pixel shuffle (r = 2 on the
    tiny 8x8 patch grid: 16 tokens on, 64 off), the same in both phases."""
    workdir, _, _ = evaluation
    expected = {BASELINE: ([], "infonce", False), MAIN: (["medsam_unicolor", "medsam_multicolor"], "dcl", True)}
    for cell, (views, loss, shuffle) in expected.items():
        for seed in SEEDS:
            run = workdir / "results" / "experiments" / cell / f"seed-{seed}"
            saved = {p: json.loads((run / p / "final" / "config.json").read_text()) for p in ("align", "vqa")}
            for phase, cfg in saved.items():
                s = cfg["settings"]
                assert (s["model"], s["seed"], s["views"], s["connector"]["pixel_shuffle"]) == (
                    MODEL,
                    seed,
                    views,
                    shuffle,
                )
                rows = list(csv.DictReader((run / phase / "losses.csv").read_text().splitlines()))
                # One step per batch up to max_steps (2); a loss that is a number.
                assert 1 <= len(rows) <= 2 and [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
                assert all(math.isfinite(float(r["loss"])) for r in rows)
                if MODEL == "vlm":
                    assert cfg["model"]["kind"] == "vlm" and cfg["model"]["family"] == "Idefics3Family"
                    assert cfg["model"]["image_tokens"] == (16 if shuffle else 64)
            assert saved["align"]["settings"]["align"]["loss"] == loss
