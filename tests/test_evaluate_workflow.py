"""The CPU-sized evaluation end to end through the real workflow: a small real VQA-RAD release,
two ablation cells (a MedSAM-lens cell and its original-images-only baseline), two seeds, a few
training steps per phase, answering on original images, Tables 1-3 and the gain plot."""

from __future__ import annotations

import json
import re

import pytest

import yaml

from loclens.evaluate.analysis import score_predictions
from loclens.evaluate.answer import candidate_answers, iter_rows, read_predictions
from loclens.evaluate.metrics import normalize_answer
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow

CELLS = ("lens-medsam/p1-dcl/shuffle-on", "lens-none/p1-dcl/shuffle-on")
SEEDS = (0, 1)
# Each rule gets one thread so two runs train side by side on two cores.
ONE_THREAD = ["--set-threads", *(f"{r}=1" for r in ("experiment_align", "experiment_vqa", "experiment_evaluate"))]


def _config(release, tiny_vit, vqa_rad_root, seeds=SEEDS) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"vqa_rad": {"path": str(vqa_rad_root)}}
    config["train"].update(
        release=str(release), device="cpu", batch_size=4, embed_dim=32,
        vision={"backend": "hf", "path": str(tiny_vit), "freeze": True},
        connector={"pixel_shuffle": True, "factor": 2},
        align={"loss": "dcl", "max_steps": 2}, vqa={"loss": "infonce", "max_steps": 2},
    )
    config["evaluate"].update(
        seeds=list(seeds),
        main={"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True},
        grid={"mode": "one_at_a_time", "lens": [["medsam"]], "phase1_loss": ["dcl"], "pixel_shuffle": [True]},
    )
    return config


def _jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, train_release, tiny_vit, vqa_rad_root):
    workdir = tmp_path_factory.mktemp("evaluation")
    release = train_release / "results" / "release"
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(release, tiny_vit, vqa_rad_root)))
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
                # Ranked among the training answers of the question's own answer type.
                assert p["prediction"] in candidates[p["answer_type"]] and p["method"] == "rank"
                assert p["score"] == p["top_k"][0]["score"] and len(p["top_k"]) == min(5, len(candidates[p["answer_type"]]))
                assert p["in_candidates"] == (normalize_answer(qa["answer"]) in {normalize_answer(a) for a in candidates[p["answer_type"]]})
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["cell"] == cell and metrics["seed"] == seed
            # metrics.json is exactly the scoring of the predictions written beside it.
            assert metrics["metrics"] == json.loads(json.dumps(score_predictions(preds)))
            assert metrics["metrics"]["combined"]["all"]["n_questions"] == len(test_qa)


def test_tables_and_plot_cover_the_grid(evaluation):
    workdir, _, _ = evaluation
    out = workdir / "results" / "evaluation"
    tables = json.loads((out / "tables.json").read_text())
    assert set(tables["cells"]) == set(CELLS) and tables["seeds"] == list(SEEDS)
    assert tables["main"] == {"cell": CELLS[0], "baseline": CELLS[1]}
    for cell in CELLS:
        agg = tables["cells"][cell]["scopes"]["vqa_rad"]["all"]["closed_accuracy"]
        assert agg["n"] == 2 and all(0.0 <= v <= 1.0 for v in agg["values"])
    (entry,) = tables["localization"]
    assert entry["cell"] == CELLS[0] and entry["baseline"] == CELLS[1] and entry["seeds"] == list(SEEDS)
    gain = entry["scopes"]["vqa_rad"]["all"]["closed_accuracy"]
    assert gain["gain"]["values"] == pytest.approx([l - b for l, b in zip(gain["lens"]["values"], gain["baseline"]["values"])])
    for name in ("table1_main.md", "table2_localization.md", "table3_ablation.md"):
        text = (out / name).read_text()
        assert "2 seeds" in text and "`lens-medsam/p1-dcl/shuffle-on`" in text or "| medsam | dcl | on | 2 |" in text
    assert (out / "gains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adding_a_seed_adds_only_that_seeds_jobs(evaluation, train_release, tiny_vit, vqa_rad_root):
    workdir, _, release = evaluation
    more = workdir / "config_more_seeds.yaml"
    more.write_text(yaml.safe_dump(_config(release, tiny_vit, vqa_rad_root, seeds=(0, 1, 2))))
    dry = run_snakemake(workdir, "--configfile", str(more), "--cores", "2", "-n", "evaluation")
    jobs = _jobs(dry.stdout + dry.stderr)
    assert jobs == {"experiment_align": 2, "experiment_vqa": 2, "experiment_evaluate": 2, "tables": 1, "evaluation": 1}, jobs
