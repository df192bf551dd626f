"""The metric definitions on hand-made cases, including the traps of LLaVA-Med's script."""

from __future__ import annotations

import math

import pytest

from loclens.evaluate.metrics import (
    closed_correct,
    exact_match,
    normalize_answer,
    open_recall,
    score_item,
    summarize,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", "yes"),
        ("The LEFT Kidney!", "left kidney"),
        ("an enlarged heart", "enlarged heart"),
        ("Two", "2"),
        ("two lesions", "2 lesions"),
        ("2.5 cm", "2.5 cm"),
        ("x-ray", "x ray"),
        ("  T2-weighted   (FLAIR)  ", "t2 weighted flair"),
        ("end.", "end"),
        ("3,000", "3,000"),
        ("ｙｅｓ", "yes"),  # full-width characters fold under NFKC
        ("", ""),
        (None, ""),
        ("theory", "theory"),  # articles are whole words only
        ("someone", "someone"),  # number words are whole words only
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "prediction, reference, correct",
    [
        ("yes", "Yes", True),
        ("No.", "no", True),
        # The trap: "no" inside another word is not a "no".
        ("not", "no", False),
        ("normal", "no", False),
        ("nodule", "no", False),
        ("none", "no", False),
        ("yesterday", "yes", False),
        # Both polarities in one answer: wrong whatever the reference.
        ("yes, no", "no", False),
        ("yes, no", "yes", False),
        ("no, there is no effusion", "no", True),
        ("yes", "no", False),
        # Non yes/no closed answers: the reference as whole tokens.
        ("left", "left", True),
        ("the left side", "left side", True),
        ("leftward", "left", False),
        ("right", "left", False),
        ("PA view", "PA", True),
        ("two", "2", True),
        ("", "yes", False),
        (None, "no", False),
    ],
)
def test_closed_correct(prediction, reference, correct):
    assert closed_correct(prediction, reference) is correct


@pytest.mark.parametrize(
    "prediction, reference, recall",
    [
        ("left kidney", "left kidney", 1.0),
        ("kidney", "left kidney", 0.5),
        ("the kidney on the left", "left kidney", 1.0),  # recall ignores order and extra words
        ("", "left kidney", 0.0),
        (None, "left kidney", 0.0),
        ("ring enhancing lesion", "ring-enhancing lesion", 1.0),
        ("two", "2 lesions", 0.5),
        ("lesion", "lesion lesion", 0.5),  # multiset: a token needed twice must appear twice
        ("no", "normal", 0.0),
    ],
)
def test_open_recall(prediction, reference, recall):
    assert open_recall(prediction, reference) == pytest.approx(recall)


def test_open_recall_of_empty_reference_is_undefined_not_zero():
    assert math.isnan(open_recall("anything", "the"))


def test_exact_match_after_normalisation():
    assert exact_match("The Liver.", "liver")
    assert exact_match("three", "3")
    assert not exact_match("liver lobe", "liver")


def test_score_item_follows_official_answer_type_not_yes_no():
    # VQA-RAD: CLOSED does not mean yes/no; "left" is a closed answer.
    s = score_item("left", "left", "CLOSED ")
    assert (s.closed, s.recall, s.yes_no, s.exact) == (1.0, None, None, 1.0)
    # An open question answered yes/no counts in the yes/no subset and in open recall.
    s = score_item("yes", "yes", "open")
    assert (s.closed, s.recall, s.yes_no) == (None, 1.0, 1.0)
    with pytest.raises(ValueError, match="answer_type"):
        score_item("yes", "yes", "boolean")


def test_summary_keeps_every_wrong_answer_in_the_denominator():
    items = [
        score_item("yes", "yes", "closed"),
        score_item("the image shows a mass", "no", "closed"),  # no yes/no at all: wrong, not dropped
        score_item("normal", "no", "closed"),  # trap: wrong
        score_item("left", "left", "closed"),
        score_item("kidney", "left kidney", "open"),
        score_item("", "liver", "open"),  # empty prediction: recall 0, counted
        score_item("whatever", "", "open"),  # unscorable reference: reported, not scored
    ]
    s = summarize(items)
    assert s["n_questions"] == 7 and s["n_unscorable"] == 1
    assert s["n_closed"] == 4 and s["closed_accuracy"] == pytest.approx(2 / 4)
    assert s["n_open"] == 2 and s["open_recall"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["n_yes_no"] == 3 and s["yes_no_accuracy"] == pytest.approx(1 / 3)
    assert s["n"] == 6 and s["exact_match"] == pytest.approx(2 / 6)


def test_summary_of_an_empty_subset_is_undefined_not_zero():
    s = summarize([score_item("liver", "liver", "open")])
    assert s["n_closed"] == 0 and math.isnan(s["closed_accuracy"])
    assert s["open_recall"] == 1.0
