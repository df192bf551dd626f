"""Answering with real trained models on a small real VQA-RAD release: the contrastive ranker and
the lens VLM (a tiny randomly initialised Idefics3), predictions in JSONL and Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from loclens.evaluate.answer import (
    PREDICTION_SCHEMA,
    candidate_answers,
    iter_rows,
    read_predictions,
)
from loclens.evaluate.answerers import Generator, Ranker, load_answerer
from loclens.evaluate.run import evaluate_model
from loclens.train import default_settings, train
from loclens.train.samples import qa_text

pytestmark = pytest.mark.slow  # trains on the workflow-built release (conftest.train_release)

SETTINGS = {"split": "test", "candidates_split": "train", "top_k": 3, "predictions_format": "parquet"}


@pytest.fixture(scope="module")
def release(train_release):
    return str(train_release / "results" / "release")


def test_candidates_are_distinct_training_answers_by_type(release):
    cands = candidate_answers(release, "vqa_rad", "train")
    train_qa = [qa for row in iter_rows(release, "vqa_rad", "train", with_image=False) for qa in row["qa"]]
    for kind in ("open", "closed"):
        answers = {qa["answer"].strip().lower() for qa in train_qa if qa["answer_type"] == kind}
        assert cands[kind] and {a.lower() for a in cands[kind]} <= answers
        assert len({a.lower().strip(".") for a in cands[kind]}) == len(cands[kind])  # one spelling each
    # "Yes" and "yes" are one candidate.
    assert sum(a.lower() == "yes" for a in cands["closed"]) <= 1


def test_ranker_scores_are_the_models_cosines_on_the_original_image(release, tiny_vit, tmp_path):
    settings = default_settings(
        vision={"backend": "hf", "path": str(tiny_vit)},
        connector={"factor": 2},
        device="cpu",
        embed_dim=16,
        vqa={"max_steps": 1},
    )
    train(settings, "vqa", release, tmp_path / "vqa", progress=False)
    answerer = load_answerer(tmp_path / "vqa" / "final", device="cpu")
    assert isinstance(answerer, Ranker)
    row = next(iter_rows(release, "vqa_rad", "test"))
    from loclens.evaluate.answer import decode_image

    image = decode_image(row["image"], row["image_id"])
    scores = answerer.rank(image, ["Is this a CT?", "Where is the lesion?"], ["yes", "no", "left lobe"])
    model = answerer.model
    with torch.no_grad():
        img = model.embed_images([np.asarray(image)])[0]
        text = model.encode_text([qa_text({"question": "Where is the lesion?", "answer": "left lobe"})])[0]
    assert scores.shape == (2, 3) and scores[1, 2] == pytest.approx(float(text @ img), abs=1e-5)

    result = evaluate_model(release, ["vqa_rad"], SETTINGS, answerer, tmp_path / "eval", {"cell": None, "seed": 0})
    table = pq.read_table(tmp_path / "eval" / "predictions" / "vqa_rad.parquet")
    assert table.schema.equals(PREDICTION_SCHEMA)
    preds = read_predictions(tmp_path / "eval" / "predictions" / "vqa_rad.parquet")
    assert len(preds) == result["metrics"]["combined"]["all"]["n_questions"] > 0
    assert all(len(p["top_k"]) <= 3 and p["top_k"][0]["answer"] == p["prediction"] for p in preds)


def test_lens_vlm_generates_free_text_that_is_scored(release, tiny_idefics3, tmp_path):
    settings = default_settings(
        model="vlm",
        device="cpu",
        vlm={"model": str(tiny_idefics3), "max_new_tokens": 4},
        fusion_heads=2,
        batch_size=2,
        vqa={"max_steps": 1},
    )
    train(settings, "vqa", release, tmp_path / "gen", progress=False)
    answerer = load_answerer(tmp_path / "gen" / "final", device="cpu")
    assert isinstance(answerer, Generator)
    # Answers are as long as the trained model's train.vlm.max_new_tokens allows.
    assert answerer.max_new_tokens is None and answerer.model.max_new_tokens == 4
    result = evaluate_model(
        release,
        ["vqa_rad"],
        {**SETTINGS, "predictions_format": "jsonl"},
        answerer,
        tmp_path / "eval",
        {"cell": None, "seed": 0},
    )
    preds = read_predictions(tmp_path / "eval" / "predictions" / "vqa_rad.jsonl")
    assert preds and all(isinstance(p["prediction"], str) and p["method"] == "generate" for p in preds)
    assert all(p["score"] is None and p["in_candidates"] is None for p in preds)
    assert result["method"] == "generate"
    assert result["metrics"]["combined"]["all"]["n_questions"] == len(preds)
    # Generation is greedy: the same model answers the same question the same way.
    row = next(iter_rows(release, "vqa_rad", "test"))
    from loclens.evaluate.answer import decode_image

    image = decode_image(row["image"], row["image_id"])
    q = [row["qa"][0]["question"]]
    assert answerer.generate(image, q) == answerer.generate(image, q)
