"""The paper's training preset (config/paper_train.yaml, config/paper_train_500m.yaml): the
paper's models, hyperparameters and Table 3 grid, merged over the data preset as Snakemake merges
--configfile files, validated against the one schema and planned by the real workflow."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import yaml
from conftest import REPO, run_snakemake
from snakemake.utils import update_config

from loclens.config import validate
from loclens.evaluate.grid import PAPER_TABLE3, baseline_cell, grid_cells, main_cell

TRAIN = REPO / "config" / "paper_train.yaml"
SMALL = REPO / "config" / "paper_train_500m.yaml"
DATA = REPO / "config" / "paper.yaml"
BIG_ID, SMALL_ID = "HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceTB/SmolVLM-500M-Instruct"


def _load(path):
    return yaml.safe_load(path.read_text())


def merged(*paths) -> dict:
    """The config the workflow sees for ``--configfile <paths...>`` in a checkout, validated
    (defaults filled in) against the schema; a key the schema lacks fails here. Snakemake merges
    the files over config.yaml key by key, except ``datasets``, which the command line's files
    replace (rules/common.smk)."""
    given: dict = {}
    for path in paths:
        update_config(given, _load(path))
    config = _load(REPO / "config.yaml")
    update_config(config, given)
    if "datasets" in given:
        config["datasets"] = given["datasets"]
    return validate(config, source=" + ".join(p.name for p in paths))


def test_the_preset_names_the_papers_models_at_pinned_revisions():
    big, small = _load(TRAIN)["train"]["vlm"], _load(SMALL)["train"]["vlm"]
    assert (big["model"], small["model"]) == (BIG_ID, SMALL_ID)
    for vlm in (big, small):
        assert re.fullmatch(r"[0-9a-f]{40}", vlm["revision"]), vlm  # a commit, not a branch
    assert big["revision"] != small["revision"]


@pytest.mark.parametrize("files", [(DATA, TRAIN), (DATA, TRAIN, SMALL)], ids=["1.7b", "0.5b"])
def test_the_presets_validate_together_with_section_3_1_hyperparameters(files):
    cfg = merged(*files)
    train, vlm = cfg["train"], cfg["train"]["vlm"]
    assert train["model"] == "vlm" and vlm["model"] == (SMALL_ID if SMALL in files else BIG_ID)
    assert (train["lr"], train["weight_decay"], vlm["dtype"]) == (1e-3, 0.01, "bfloat16")
    assert all(v is None for v in vlm["lr"].values())  # one learning rate, the paper's
    lora = vlm["lora"]["lm"]
    assert lora["enabled"] and (lora["r"], lora["alpha"], lora["dropout"]) == (8, 16, 0.05)
    assert not vlm["lora"]["vision"]["enabled"]
    assert train["connector"] == {"pixel_shuffle": True, "factor": 4}
    assert (train["batch_size"], train["grad_accum"]) == (4, 2)
    align, vqa = train["align"], train["vqa"]
    assert (align["loss"], align["epochs"], vqa["loss"], vqa["epochs"]) == ("dcl", 1, "infonce", 3)
    assert "lm" not in align["trainable"] and "lm" in vqa["trainable"]  # LM frozen in phase 1
    assert sorted(train["datasets"]) == ["slake", "vqa_rad"] == sorted(cfg["datasets"])
    assert cfg["split"] == "grouped" and cfg["grouped_split"]["test_fraction"] == 0.3
    evaluate = cfg["evaluate"]
    assert grid_cells(evaluate) == list(PAPER_TABLE3) and len(evaluate["seeds"]) >= 3
    assert (main_cell(evaluate), baseline_cell(evaluate)) == (PAPER_TABLE3[-1], PAPER_TABLE3[0])


def test_the_500m_preset_trains_on_the_release_the_data_preset_builds():
    big, small = merged(DATA, TRAIN), merged(DATA, TRAIN, SMALL)
    assert small["train"]["release"] == f"{big['results']}/release"
    assert small["results"] != big["results"]  # its models and tables do not overwrite the 1.7B run's


def _jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[-1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
        if m.group(1) != "total"
    }


def _train_settings(output: str, phase: str) -> list[dict]:
    """The --settings JSON of every planned `loclens train --phase <phase>` command."""
    out = []
    for line in output.splitlines():
        if f"loclens train --phase {phase} " in line:
            args = shlex.split(line.split("Shell command:", 1)[-1].split(">", 1)[0])
            out.append(json.loads(args[args.index("--settings") + 1]))
    return out


@pytest.mark.slow  # runs Snakemake (a dry run)
@pytest.mark.parametrize("files", [(DATA, TRAIN), (DATA, TRAIN, SMALL)], ids=["1.7b", "0.5b"])
def test_the_evaluation_target_plans_the_papers_grid_with_the_preset(tmp_path, files):
    """`snakemake -n evaluation` in a checkout: 8 Table 3 cells x 3 seeds, each trained with the
    preset's VLM at its pinned revision; per cell only the grid's factors change."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    dry = run_snakemake(tmp_path, "-n", "-p", "evaluation", "--configfile", *map(str, files))
    text = dry.stdout + dry.stderr
    jobs = _jobs(text)
    assert {k: jobs.get(k) for k in ("experiment_align", "experiment_vqa", "experiment_evaluate", "tables")} == {
        "experiment_align": 24,
        "experiment_vqa": 24,
        "experiment_evaluate": 24,
        "tables": 1,
    }
    cfg = merged(*files)
    assert f"{cfg['results']}/evaluation/tables.json" in text
    for phase in ("align", "vqa"):
        planned = _train_settings(text, phase)
        assert len(planned) == 24, phase
        assert sorted({s["seed"] for s in planned}) == [0, 1, 2]
        for s in planned:
            assert s["model"] == "vlm" and s["vlm"] == cfg["train"]["vlm"]
            assert (s["lr"], s["batch_size"], s["grad_accum"]) == (1e-3, 4, 2)
            assert s[phase]["epochs"] == cfg["train"][phase]["epochs"]
        shuffles = {(s["connector"]["pixel_shuffle"], s["connector"]["factor"]) for s in planned}
        assert shuffles == {(True, 4), (False, 4)}
        if phase == "align":  # the grid's phase-1 losses
            assert sorted(s["align"]["loss"] for s in planned) == ["dcl"] * 6 + ["infonce"] * 18
