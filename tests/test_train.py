"""Training both phases on a real VQA-RAD release on CPU: the loss falls, checkpoints resume
exactly, the lens VLMs (tiny Idefics3 and LLaVA) run both phases and resume, and the workflow's
`train` target runs the two rules."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
import torch
import yaml
from conftest import run_snakemake
from safetensors.torch import load_file

from loclens.train import default_settings, load_model, train
from loclens.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def release(train_release):
    return str(train_release / "results" / "release")


def vit_settings(tiny_vit, **overrides):
    return default_settings(
        vision={"backend": "hf", "path": str(tiny_vit)}, connector={"factor": 2}, device="cpu", **overrides
    )


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_both_phases_lower_their_loss(release, tiny_vit, tmp_path):
    # Phase 1: 5 train images, batch 4 -> one step per epoch, so 10 epochs overfit a tiny batch
    # (4 of the 5 images, with two freshly drawn lens views every epoch).
    settings = vit_settings(tiny_vit, align={"epochs": 10})
    align = train(settings, "align", release, tmp_path / "align", progress=False)
    assert align["steps"] == 10
    first, last = mean(align["losses"][:2]), mean(align["losses"][-2:])
    assert last < first - 0.5, align["losses"]

    # Phase 2 starts from phase 1's model: 34 questions, batch 4 -> 8 steps per epoch.
    vqa = train(
        settings | {"vqa": settings["vqa"] | {"epochs": 3}},
        "vqa",
        release,
        tmp_path / "vqa",
        init=tmp_path / "align" / "final",
        progress=False,
    )
    assert vqa["steps"] == 24
    # Each epoch covers the same 32 questions (in other batches): compare whole epochs.
    first, last = mean(vqa["losses"][:8]), mean(vqa["losses"][16:])
    assert last < first - 0.3, vqa["losses"]

    for phase, result in (("align", align), ("vqa", vqa)):
        out = tmp_path / phase
        with open(out / "losses.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["step"]) for r in rows] == list(range(1, result["steps"] + 1))
        assert (out / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        weights = load_file(str(out / "final" / "model.safetensors"))
        assert weights and not any(k.startswith(("vision.", "text.")) for k in weights)  # frozen towers
        config = json.loads((out / "final" / "config.json").read_text())
        assert (
            config["model"]["vision"]["backend"] == "hf"
            and config["settings"][phase]["loss"] == settings[phase]["loss"]
        )
    model = load_model(tmp_path / "vqa" / "final")
    assert model.encode_text(["question: is this the liver? answer: yes"]).shape == (1, 256)


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
def test_resume_from_checkpoint_gives_the_same_next_losses(release, tiny_vit, tmp_path):
    # Phase 2 has 8 steps per epoch: stopping at step 3 resumes in the middle of an epoch.
    def settings(max_steps, **kw):
        return vit_settings(
            tiny_vit,
            checkpoint_every=1,
            keep_checkpoints=2,
            vqa={"loss": "infonce", "max_steps": max_steps, "epochs": 2},
            **kw,
        )

    whole = train(settings(5), "vqa", release, tmp_path / "whole", progress=False)
    first = train(settings(3), "vqa", release, tmp_path / "split", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step-00000002", "step-00000003"]
    assert first["losses"] == whole["losses"][:3]
    resumed = train(settings(5), "vqa", release, tmp_path / "split", progress=False)
    assert resumed["losses"] == whole["losses"]  # steps 4 and 5 identical to the uninterrupted run
    files = {p.name for p in list_checkpoints(tmp_path / "split")[-1].iterdir()}
    assert files == {
        "model.safetensors",
        "config.json",
        "optimizer.safetensors",
        "rng.safetensors",
        "trainer_state.json",
    }

    # Other settings do not resume from these checkpoints: they are set aside, training restarts.
    other = train(settings(2, lr=5e-4), "vqa", release, tmp_path / "split", progress=False)
    assert other["steps"] == 2 and other["losses"][0] == whole["losses"][0] and other["losses"][1] != whole["losses"][1]
    assert any(p.name.startswith("checkpoints-stale-") for p in (tmp_path / "split").iterdir())


@pytest.mark.slow  # the workflow-built release (conftest.train_release)
@pytest.mark.parametrize("family", ["idefics3", "llava"])
def test_lens_vlm_runs_both_phases_on_a_release_and_resumes_exactly(
    family, release, tiny_idefics3, tiny_llava, tmp_path
):
    folder = {"idefics3": tiny_idefics3, "llava": tiny_llava}[family]

    def settings(max_steps):
        return default_settings(
            model="vlm",
            vlm={"model": str(folder), "max_new_tokens": 3},
            device="cpu",
            fusion_heads=2,
            batch_size=2,
            lr=3e-3,
            checkpoint_every=1,
            keep_checkpoints=1,
            align={"max_steps": max_steps, "epochs": 3},
            vqa={"max_steps": 2},
        )

    # 5 train images, batch 2: 2 steps per epoch, so stopping after step 3 resumes mid-epoch.
    whole = train(settings(5), "align", release, tmp_path / "whole", progress=False)
    train(settings(3), "align", release, tmp_path / "split", progress=False)
    resumed = train(settings(5), "align", release, tmp_path / "split", progress=False)
    assert resumed["losses"] == whole["losses"] and len(whole["losses"]) == 5
    a, b = (load_file(str(tmp_path / d / "final" / "model.safetensors")) for d in ("whole", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Phase 1 saved the vision side it trained, not the frozen LM.
    assert any(".vision" in k for k in a) and any(k.startswith("fusion.") for k in a)
    assert not any(
        k.startswith(("model.model.text_model.", "model.model.language_model.", "model.lm_head.")) for k in a
    )

    vqa = train(settings(5), "vqa", release, tmp_path / "vqa", init=tmp_path / "whole" / "final", progress=False)
    assert vqa["steps"] == 2 and all(math.isfinite(x) for x in vqa["losses"])
    model = load_model(tmp_path / "vqa" / "final")
    assert model.kind == "vlm" and {"vision", "lm", "fusion"} <= model.modified
    final = load_file(str(tmp_path / "vqa" / "final" / "model.safetensors"))
    assert set(a) <= set(final)  # phase 2 started from phase 1's components and keeps them
    from loclens.evaluate.answer import iter_rows
    from loclens.train.vlm import generate_answers_for_rows

    rows = list(iter_rows(release, "vqa_rad", "test"))[:1]
    answers = list(generate_answers_for_rows(model, rows))
    assert [a["qid"] for a in answers] == [qa["qid"] for qa in rows[0]["qa"]]
    assert all(isinstance(a["prediction"], str) for a in answers)


def test_cli_relaunches_itself_under_torchrun(monkeypatch, tmp_path):
    import subprocess
    import sys

    from loclens import cli

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    argv = [
        "train",
        "--phase",
        "align",
        "--release",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--nproc-per-node",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", ["loclens", *argv])
    assert cli.main(argv) == 0
    assert calls == [
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "loclens.cli",
            *argv,
        ]
    ]


@pytest.mark.slow
def test_workflow_train_target_runs_align_then_vqa(train_release, tiny_vit):
    config = yaml.safe_load((train_release / "config.yaml").read_text())
    config["train"] = {
        "vision": {"backend": "hf", "path": str(tiny_vit)},
        "connector": {"factor": 2},
        "device": "cpu",
        "align": {"epochs": 2},
        "vqa": {"max_steps": 2},
    }
    cfg = train_release / "config_train.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = run_snakemake(train_release, "--configfile", str(cfg), "--cores", "2", "train")
    table = (run.stdout + run.stderr).split("Job stats:", 1)[1]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m[1] != "total"}
    assert jobs == {"train_align": 1, "train_vqa": 1, "train": 1}  # the release is not rebuilt
    out = train_release / "results" / "train"
    for phase in ("align", "vqa"):
        with open(out / phase / "losses.csv") as fh:
            assert len(list(csv.DictReader(fh))) == 2
    assert load_model(out / "vqa" / "final").settings["vision"]["path"] == str(tiny_vit)
    again = run_snakemake(train_release, "--configfile", str(cfg), "--cores", "2", "-n", "train")
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_workflow_train_target_runs_the_lens_vlm(train_release, tiny_idefics3):
    config = yaml.safe_load((train_release / "config.yaml").read_text())
    config["results"] = "results_vlm"
    config["train"] = {
        "model": "vlm",
        "vlm": {"model": str(tiny_idefics3)},
        "release": str(train_release / "results" / "release"),
        "fusion_heads": 2,
        "batch_size": 2,
        "device": "cpu",
        "align": {"max_steps": 2},
        "vqa": {"max_steps": 2},
    }
    cfg = train_release / "config_train_vlm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run_snakemake(train_release, "--configfile", str(cfg), "--cores", "2", "train")
    out = train_release / "results_vlm" / "train"
    for phase in ("align", "vqa"):
        with open(out / phase / "losses.csv") as fh:
            assert len(list(csv.DictReader(fh))) == 2
    model = load_model(out / "vqa" / "final")
    assert model.kind == "vlm" and model.spec()["image_tokens"] == 4
