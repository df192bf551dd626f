"""The VQA-RAD reader on real release files (the vendored subset, tests/data/vqa_rad, which keeps
every quirk record of the release): every quirk handled, nothing lost. Expected counts are
computed from the raw JSON and the image folder, independently of the reader."""

from __future__ import annotations

import collections
import json

from loclens.sources import read_source
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME
from loclens.split import assign_splits


def _raw(root) -> list[dict]:
    return json.loads((root / JSON_NAME).read_text(encoding="utf-8"))


def test_reads_every_record_of_the_real_release(vqa_rad_root):
    result = read_source("vqa_rad", vqa_rad_root, dataset="vqa_rad")
    raw = _raw(vqa_rad_root)
    files = {p.name for p in (vqa_rad_root / IMAGE_DIR).iterdir()}
    named = {r["image_name"] for r in raw}
    released = sum(len(i.qa) for i in result.images)
    qa_rejects = [r for r in result.rejects if r.kind == "qa"]
    assert result.input_records == len(raw) > 100
    assert released + len(qa_rejects) == len(raw)
    assert released == len(raw)  # the real release has no bad record
    assert len(result.images) == len(named) == len(named & files)
    # The image file without QA (synpic35356.jpg in the release) is reported, not silently ignored.
    unnamed = sorted(files - named)
    assert unnamed == ["synpic35356.jpg"]
    assert [(r.kind, r.source_file) for r in result.rejects] == [("image", f"{IMAGE_DIR}/{n}") for n in unnamed]


def test_quirks_are_normalised(vqa_rad_root):
    result = read_source("vqa_rad", vqa_rad_root, dataset="vqa_rad")
    qas = {qa.qid: qa for img in result.images for qa in img.qa}
    raw = _raw(vqa_rad_root)
    assert len(qas) == len(raw)
    assert "0" in qas and qas["0"].question == raw[0]["question"]  # qid "0" is a string in the file
    # The subset keeps every record of these quirks, so their counts are the release's.
    int_answers = [r for r in raw if isinstance(r["answer"], int)]
    assert len(int_answers) == 5
    for r in int_answers:
        assert qas[str(r["qid"])].answer == str(r["answer"])
    assert {qa.answer_type for qa in qas.values()} == {"open", "closed"}
    trailing = [r for r in raw if r["answer_type"] == "CLOSED "]
    assert len(trailing) == 2 and all(qas[str(r["qid"])].answer_type == "closed" for r in trailing)
    multi = [qa for qa in qas.values() if len(qa.question_type) > 1]
    assert multi and all("," not in t and t == t.strip() for qa in multi for t in qa.question_type)
    labels = collections.Counter(t for qa in qas.values() for t in qa.question_type)
    raw_labels = {t.strip() for r in raw for t in r["question_type"].split(",")}
    assert {"ATRIB", "PRSE", "Other"} <= raw_labels, "the typos are in the input"
    assert "ATRIB" not in labels and "PRSE" not in labels and "Other" not in labels
    missing_rephrase = [r for r in raw if "question_rephrase" not in r]
    assert len(missing_rephrase) == 2
    for r in missing_rephrase:
        assert "question_rephrase" not in json.loads(qas[str(r["qid"])].to_row()["extra"])
    nulls = [qa for qa in qas.values() if qa.extra.get("question_frame") is None]
    assert nulls, "NULL strings become missing values"
    # CLOSED is not yes/no: the reader keeps the official label, whatever the answer.
    closed_other = [qa for qa in qas.values() if qa.answer_type == "closed" and qa.answer.lower() not in ("yes", "no")]
    raw_closed_other = [
        r for r in raw if r["answer_type"].strip() == "CLOSED" and str(r["answer"]).lower() not in ("yes", "no")
    ]
    assert len(closed_other) == len(raw_closed_other) > 0
    # Every image is identified by content hash and has a body region.
    assert all(len(img.image_id) == 16 for img in result.images)
    assert {img.body_region for img in result.images} == {"head", "chest", "abdomen"}


def test_official_split_follows_phrase_type(vqa_rad_root):
    result = read_source("vqa_rad", vqa_rad_root, dataset="vqa_rad")
    rows = assign_splits(result.images, "official", seed=0, test_fraction=0.3)
    qa_per_split = collections.Counter(split for split, _, qas in rows for _ in qas)
    # The split is encoded in phrase_type: freeform and para are train, test_freeform and test_para test.
    raw = _raw(vqa_rad_root)
    expected = collections.Counter("test" if r["phrase_type"].startswith("test_") else "train" for r in raw)
    assert qa_per_split == expected and expected["test"] > 0
    test_images = {img.image_id for split, img, _ in rows if split == "test"}
    train_images = {img.image_id for split, img, _ in rows if split == "train"}
    # The official split is by question, not by image: images with QA in both splits get a row in each.
    by_name = collections.defaultdict(set)
    for r in raw:
        by_name[r["image_name"]].add("test" if r["phrase_type"].startswith("test_") else "train")
    assert len(test_images) == sum("test" in s for s in by_name.values())
    assert len(test_images & train_images) == sum(s == {"train", "test"} for s in by_name.values()) > 0


def test_grouped_split_keeps_images_and_paraphrases_together(vqa_rad_root):
    result = read_source("vqa_rad", vqa_rad_root, dataset="vqa_rad")
    rows = assign_splits(result.images, "grouped", seed=0, test_fraction=0.3)
    split_of = {}
    for split, img, _ in rows:
        assert split_of.setdefault(img.image_id, split) == split, "an image landed in two splits"
    assert sum(len(qas) for _, _, qas in rows) == len(_raw(vqa_rad_root))
    linked = collections.defaultdict(set)
    for split, _, qas in rows:
        for qa in qas:
            if qa.linked_id:
                linked[qa.linked_id].add(split)
    assert linked and all(len(s) == 1 for s in linked.values()), "a paraphrase group spans two splits"
    n_test = sum(1 for s in split_of.values() if s == "test")
    # Whole groups are added until 30% of the images are test (one image per group here).
    assert 0.3 * len(split_of) <= n_test < 0.3 * len(split_of) + 1
    again = assign_splits(list(reversed(result.images)), "grouped", seed=0, test_fraction=0.3)
    assert {i.image_id: s for s, i, _ in again} == split_of, "split depends on input order"
    other = assign_splits(result.images, "grouped", seed=1, test_fraction=0.3)
    assert {i.image_id: s for s, i, _ in other} != split_of, "seed has no effect"
