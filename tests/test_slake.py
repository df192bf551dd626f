"""SLAKE reader on a small tree in both published layouts: quirks, expert annotations, languages
and splits, and loud errors for annotation files that do not fit the convention."""

from __future__ import annotations

import collections
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from slake_tree import (
    CLASS_NAMES,
    IMAGES,
    N_CHINESE,
    N_MALFORMED,
    N_RECORDS,
    UNREFERENCED_ID,
    boxes,
    build_slake_tree,
    expert_label_maps,
)

from loclens.config import validate
from loclens.ingest import check_accounting, read_jsonl, run_ingest
from loclens.segment import rle
from loclens.sources import SourceError, read_source


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("slake")
    return build_slake_tree(base / "original", "original"), build_slake_tree(base / "hf", "hf"), base


def _img_id(image) -> int:
    """SLAKE's img_id of a read image (its folder is imgs/xmlab<img_id>)."""
    return int(Path(image.source_file).parent.name[len("xmlab") :])


def _comparable(result):
    images = [{k: v for k, v in asdict(i).items() if k != "path"} for i in result.images]
    return images, [r.to_dict() for r in result.rejects], result.input_records


def test_both_layouts_give_identical_records(trees):
    original, hf, base = trees
    assert not (hf / "imgs").exists() and (hf / "imgs.zip").is_file() and (hf / "validation.json").is_file()
    a = read_source("slake", original, dataset="slake", unpack_dir=base / "unused")
    b = read_source("slake", hf, dataset="slake", unpack_dir=base / "unpacked")
    assert not (base / "unused").exists(), "the original layout needs no unpacking"
    assert (base / "unpacked" / "imgs" / "xmlab3" / "source.jpg").is_file()
    assert _comparable(a) == _comparable(b)
    assert all(Path(i.path).is_relative_to(base / "unpacked") for i in b.images)
    # Reading again reuses the unpacked archive (the marker records its sha256).
    marker = next((base / "unpacked").glob(".loclens-unpacked-imgs.zip.json"))
    stamp = marker.stat().st_mtime_ns
    read_source("slake", hf, dataset="slake", unpack_dir=base / "unpacked")
    assert marker.stat().st_mtime_ns == stamp


def test_quirks_are_handled_and_nothing_is_lost(trees):
    original, _, _ = trees
    result = read_source("slake", original, dataset="slake")
    assert result.input_records == N_RECORDS
    qa_rejects = [r for r in result.rejects if r.kind == "qa"]
    released = [qa for img in result.images for qa in img.qa]
    assert len(released) + len(qa_rejects) == N_RECORDS
    reasons = sorted(r.reason for r in qa_rejects)
    assert len(reasons) == N_MALFORMED
    assert reasons[0] == "malformed record: empty answer"
    assert "img_name 'xmlab4/source.jpg' does not match img_id 3" in reasons[1]
    assert [(r.kind, r.source_file) for r in result.rejects if r.kind == "image"] == [
        ("image", f"imgs/xmlab{UNREFERENCED_ID}")
    ]
    assert len(result.images) == len(IMAGES)
    by_lang = collections.Counter(qa.lang for qa in released)
    assert by_lang == {"en": len(IMAGES) * 4 + 1, "zh": N_CHINESE}
    closed_other = [qa for qa in released if qa.answer_type == "closed" and qa.answer.lower() not in ("yes", "no")]
    assert closed_other, "CLOSED is not yes/no: the official label is kept"
    kg = next(qa for qa in released if qa.question_type == ["KG"])
    assert kg.extra["base_type"] == "kvqa" and kg.extra["triple"] == ["liver", "function", "?"]
    assert kg.extra["official_split"] == "train" and kg.extra["img_name"] == "xmlab17/source.jpg"
    splits = {qa.official_split for qa in released}
    assert splits == {"train", "validation", "test"}
    regions = {Path(i.source_file).parent.name: (i.body_region, i.modality) for i in result.images}
    assert regions["xmlab3"] == ("chest", "X-Ray") and regions["xmlab17"] == ("abdomen", "CT")
    assert regions["xmlab102"] == ("head", "MRI")


def test_expert_masks_and_boxes_match_the_files(trees):
    original, _, _ = trees
    result = read_source("slake", original, dataset="slake")
    maps = expert_label_maps()
    by_id = {_img_id(i): i for i in result.images}
    assert sorted(by_id) == sorted(IMAGES) and set(maps) < set(IMAGES), "every image checked, both kinds present"
    for img_id, image in sorted(by_id.items()):
        if img_id not in maps:
            assert image.expert_masks == [] and image.expert_boxes == []  # empty detection.json, no mask.png
            continue
        ids = maps[img_id]
        labels = [CLASS_NAMES[c] for c in sorted(int(c) for c in np.unique(ids) if c)]
        assert labels and [m["label"] for m in image.expert_masks] == labels
        for entry in image.expert_masks:
            class_id = next(k for k, v in CLASS_NAMES.items() if v == entry["label"])
            assert np.array_equal(rle.decode(entry["rle"]), ids == class_id), "class id is read from channel 0"
            assert entry["segmenter"] == "expert" and entry["area"] == int((ids == class_id).sum())
            assert len(entry["checkpoint_sha256"]) == 64
        expected = [{"label": k, "box": [float(v) for v in b]} for item in boxes(ids) for k, b in item.items()]
        assert image.expert_boxes == expected
        twice = {3: "Lung", 17: "Kidney", 102: "Ventricle"}[img_id]
        assert collections.Counter(b["label"] for b in image.expert_boxes)[twice] == 2, "an organ can appear twice"


def _config(root: Path, tmp: Path, **dataset) -> dict:
    return validate({"datasets": {"slake": {"path": str(root), **dataset}}, "resources": str(tmp / "resources")})


def test_ingest_keeps_english_by_default_and_tags_localization(trees, tmp_path):
    original, _, _ = trees
    plan = run_ingest("slake", _config(original, tmp_path), tmp_path / "out")
    check_accounting(plan)
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    lang_rejects = [r for r in rejects if "language" in r["reason"]]
    assert len(lang_rejects) == N_CHINESE
    assert lang_rejects[0]["reason"] == "question language 'zh' not selected (datasets.slake.lang: en)"
    assert lang_rejects[0]["record"]["question"], "the rejected QA is kept verbatim in the report"
    rows = read_jsonl(tmp_path / "out" / "records.jsonl")
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["image_id"], row["split"]) == row["split"], (
            "English images are disjoint across splits"
        )
        assert all(qa["lang"] == "en" for qa in row["qa"])
    qas = [qa for row in rows for qa in row["qa"]]
    organ = [qa for qa in qas if qa["question_type"] == ["Organ"]]
    position = [qa for qa in qas if qa["question_type"] == ["Position"]]
    assert all(
        qa["localization"] == ["anatomical"] and qa["localization_rule"] == "slake:question_type=Organ" for qa in organ
    )
    assert all(
        qa["localization"] == ["positioning"] and qa["localization_rule"] == "slake:question_type=Position"
        for qa in position
    )
    assert all(qa["localization"] == [] and qa["localization_rule"] is None for qa in qas if qa not in organ + position)
    totals = collections.Counter()
    for counts in plan.localization.values():
        totals.update(counts)
    assert totals["anatomical"] == len(organ) == len(IMAGES) and totals["positioning"] == len(position) == len(IMAGES)
    assert plan.localization_rules["slake:question_type=Organ"] == len(IMAGES)


def test_chinese_selectable_and_grouped_split_keeps_each_image_in_one_split(trees, tmp_path):
    original, _, _ = trees
    plan = run_ingest("slake", _config(original, tmp_path, lang="zh"), tmp_path / "zh")
    check_accounting(plan)
    rows = read_jsonl(tmp_path / "zh" / "records.jsonl")
    assert sum(len(r["qa"]) for r in rows) == N_CHINESE and {qa["lang"] for r in rows for qa in r["qa"]} == {"zh"}
    # Chinese positioning rows are tagged from SLAKE's metadata (no keyword rules for Chinese).
    assert sum(qa["localization"] == ["positioning"] for r in rows for qa in r["qa"]) == len(IMAGES)

    plan = run_ingest("slake", _config(original, tmp_path, lang="all"), tmp_path / "all")
    rows = read_jsonl(tmp_path / "all" / "records.jsonl")
    splits = collections.defaultdict(set)
    for row in rows:
        splits[row["image_id"]].add(row["split"])
    assert any(len(s) > 1 for s in splits.values()), "official split: Chinese rows sit in other splits"

    config = _config(original, tmp_path, lang="all")
    config["split"] = "grouped"
    plan = run_ingest("slake", config, tmp_path / "grouped")
    check_accounting(plan)
    rows = read_jsonl(tmp_path / "grouped" / "records.jsonl")
    splits = collections.defaultdict(set)
    for row in rows:
        splits[row["image_id"]].add(row["split"])
    assert len(splits) == len(IMAGES) and all(len(s) == 1 for s in splits.values())
    assert {s for v in splits.values() for s in v} == {"train", "test"}
    assert sum(len(r["qa"]) for r in rows) == N_RECORDS - N_MALFORMED


def _break(tree: Path, case: str) -> str:
    """Damage one annotation file of ``tree``; return the file and problem the error must name."""
    folder = tree / "imgs" / "xmlab17"
    if case == "mask.txt line":
        (tree / "mask.txt").write_text("1:Liver\nKidney\n")
        return "mask.txt:2: expected 'id:name'"
    if case == "mask.txt missing":
        (tree / "mask.txt").unlink()
        return "mask.txt: class list not found"
    if case == "mask size":
        Image.new("L", (10, 10)).save(folder / "mask.png")
        return "xmlab17/mask.png: label map is 10x10"
    if case == "unknown class":
        arr = np.asarray(Image.open(folder / "mask.png")).copy()
        arr[0, 0, 0] = 42
        Image.fromarray(arr).save(folder / "mask.png")
        return "xmlab17/mask.png: class ids [42] are not listed"
    if case == "not a list":
        (folder / "detection.json").write_text('{"Liver": [1, 2, 3, 4]}')
        return "xmlab17/detection.json: expected a JSON list"
    if case == "two keys":
        (folder / "detection.json").write_text('[{"Liver": [1, 2, 3, 4], "Kidney": [1, 2, 3, 4]}]')
        return "xmlab17/detection.json[0]: expected a single-key object"
    if case == "box outside":
        (folder / "detection.json").write_text('[{"Liver": [1, 2, 3, 4]}, {"Liver": [5000, 2, 3, 4]}]')
        return "xmlab17/detection.json[1]: box of 'Liver' [5000, 2, 3, 4] (x, y, w, h) lies outside"
    if case == "empty box":
        (folder / "detection.json").write_text('[{"Liver": [1, 2, 0, 4]}]')
        return "xmlab17/detection.json[0]: box of 'Liver' has a non-positive size"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "mask.txt line",
        "mask.txt missing",
        "mask size",
        "unknown class",
        "not a list",
        "two keys",
        "box outside",
        "empty box",
    ],
)
def test_annotation_that_does_not_fit_fails_loudly_naming_the_file(trees, tmp_path, case):
    original, _, _ = trees
    tree = tmp_path / "tree"
    shutil.copytree(original, tree)
    named = _break(tree, case)
    with pytest.raises(SourceError) as err:
        read_source("slake", tree, dataset="slake")
    assert named in str(err.value), str(err.value)


def test_unsafe_archive_is_refused(trees, tmp_path):
    _, hf, _ = trees
    tree = tmp_path / "tree"
    shutil.copytree(hf, tree)
    with zipfile.ZipFile(tree / "imgs.zip", "a") as zf:
        zf.writestr("../../evil.txt", b"x")
    with pytest.raises(SourceError, match=r"imgs\.zip: member '\.\./\.\./evil\.txt' escapes"):
        read_source("slake", tree, dataset="slake", unpack_dir=tmp_path / "unpacked")
    assert not (tmp_path / "evil.txt").exists() and not any((tmp_path / "unpacked").rglob("source.jpg"))


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(SourceError) as err:
        read_source("slake", tmp_path / "nowhere", dataset="slake")
    message = str(err.value)
    assert "loclens download slake --out" in message and "BoKelvin/SLAKE" in message


def test_expert_boxes_are_the_first_prompt_source_with_their_own_cap(trees):
    from loclens.imageio import load_rgb, read_bytes
    from loclens.segment.prompts import prompt_context, prompts_for

    original, _, _ = trees
    cfg = validate({"datasets": {"slake": {}}})["segment"]["medsam"]
    cfg["max_prompts"] = 2  # the global cap; expert boxes have their own (32)
    images = read_source("slake", original, dataset="slake").images
    annotated = {IMAGES[_img_id(i)][2] for i in images}
    assert len(images) == len(IMAGES) and annotated == {True, False}, "both branches below are taken"
    for image in images:
        pixels = load_rgb(read_bytes(image.path), image.path)
        prompts = prompts_for(pixels, cfg["prompts"], cfg, context=prompt_context(asdict(image)))
        assert bool(image.expert_boxes) == IMAGES[_img_id(image)][2]
        if image.expert_boxes:
            assert len(image.expert_boxes) > 2
            assert [(p.source, p.label) for p in prompts] == [("expert", b["label"]) for b in image.expert_boxes]
            x, y, w, h = image.expert_boxes[0]["box"]
            assert prompts[0].box == (x, y, x + w, y + h)  # x0, y0, x1, y1 for the segmenter
        else:
            assert prompts and len(prompts) <= 2 and {p.source for p in prompts} == {"otsu"}
