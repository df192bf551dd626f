"""Localization tags: metadata rules per vocabulary, documented keyword rules, and how well the
keyword rules recover VQA-RAD's own labels on real release records (the vendored subset)."""

from __future__ import annotations

import pytest

from loclens.localization import KEYWORD_RULES, count_rules, count_tags, tag_question
from loclens.sources import read_source


@pytest.mark.parametrize(
    "labels, vocabulary, tags, rule",
    [
        (["ORGAN"], "vqa_rad", ["anatomical"], "vqa_rad:question_type=ORGAN"),
        (["PRES", "POS"], "vqa_rad", ["anatomical", "positioning"], "vqa_rad:question_type=POS+PRES"),
        (["MODALITY"], "vqa_rad", [], None),
        (["Organ"], "slake", ["anatomical"], "slake:question_type=Organ"),
        (["Position"], "slake", ["positioning"], "slake:question_type=Position"),
        (["Abnormality"], "slake", [], None),
    ],
)
def test_metadata_decides_where_present(labels, vocabulary, tags, rule):
    # The question text would fire keyword rules; metadata wins when the QA has labels.
    assert tag_question("Where is the liver?", labels, "en", vocabulary) == (tags, rule)


@pytest.mark.parametrize(
    "question, tags, rule",
    [
        ("Where is the lesion?", ["positioning"], "keyword:where"),
        ("Which lung lobe has the opacity?", ["positioning"], "keyword:which-part"),
        ("Is the mass on the left or right?", ["positioning"], "keyword:left-right"),
        ("How is the catheter positioned?", ["positioning"], "keyword:located"),
        ("What organ system is shown?", ["anatomical"], "keyword:body-region"),
        ("Is there a pneumothorax?", ["anatomical"], "keyword:presence"),
        ("Is the spleen visible in this image?", ["anatomical"], "keyword:organ-presence"),
        ("Where is the kidney seen in this image?", ["anatomical", "positioning"], "keyword:where+organ-presence"),
        ("What modality was used?", [], None),
    ],
)
def test_keyword_rules_without_metadata(question, tags, rule):
    assert tag_question(question, [], "en", None) == (tags, rule)
    # A source with a vocabulary but no labels on this QA falls back to the keywords too.
    assert tag_question(question, [], "en", "vqa_rad") == (tags, rule)


def test_keyword_rules_are_english_only_and_named_uniquely():
    assert tag_question("肝脏在哪里？", [], "zh", None) == ([], None)
    names = [name for name, _, _ in KEYWORD_RULES]
    assert len(names) == len(set(names))


def test_counts_per_split_and_rule():
    rows = [
        {
            "split": "train",
            "qa": [
                {"localization": ["anatomical"], "localization_rule": "a"},
                {"localization": ["anatomical", "positioning"], "localization_rule": "b"},
            ],
        },
        {"split": "test", "qa": [{"localization": [], "localization_rule": None}]},
    ]
    assert count_tags(rows) == {
        "test": {"qa": 1, "anatomical": 0, "positioning": 0, "localization": 0},
        "train": {"qa": 2, "anatomical": 2, "positioning": 1, "localization": 2},
    }
    assert count_rules(rows) == {"(none)": 1, "a": 1, "b": 1}


def test_keyword_rules_recover_vqa_rad_labels(vqa_rad_root):
    """The keyword rules against VQA-RAD's own question_type on the real QA pairs of the test subset
    (deterministic; the thresholds also hold on the full release's 2,248 pairs)."""
    qas = [qa for image in read_source("vqa_rad", vqa_rad_root, dataset="vqa_rad").images for qa in image.qa]
    figures = {}
    for tag in ("anatomical", "positioning"):
        truth = [tag in tag_question(q.question, q.question_type, q.lang, "vqa_rad")[0] for q in qas]
        guess = [tag in tag_question(q.question, [], q.lang, None)[0] for q in qas]
        tp = sum(t and g for t, g in zip(truth, guess))
        figures[tag] = (tp / max(sum(guess), 1), tp / max(sum(truth), 1), sum(truth))
        print(
            f"keyword rules vs VQA-RAD labels, {tag}: precision {figures[tag][0]:.3f}, recall {figures[tag][1]:.3f} (of {figures[tag][2]})"
        )
    assert figures["positioning"][0] >= 0.7 and figures["positioning"][1] >= 0.75
    assert figures["anatomical"][0] >= 0.7 and figures["anatomical"][1] >= 0.5
