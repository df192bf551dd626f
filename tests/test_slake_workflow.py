"""The whole workflow (real Snakemake, real LiteMedSAM) on a SLAKE tree in the Hub layout
(imgs.zip) together with real VQA-RAD images: one release with both configs, expert boxes as
MedSAM prompts, expert masks for the masked view, localization tags and counts."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from conftest import REPO, SEGMENT_ONE_THREAD, run_snakemake
from slake_tree import CLASS_NAMES, IMAGES, N_CHINESE, N_MALFORMED, N_RECORDS, build_slake_tree, expert_label_maps

from loclens.schema import FEATURES
from loclens.segment import rle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def release(tmp_path_factory, vqa_rad_root) -> Path:
    workdir = tmp_path_factory.mktemp("slake_build")
    tree = build_slake_tree(workdir / "slake_hub_copy", "hf")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"slake": {"path": str(tree)}, "vqa_rad": {"path": str(vqa_rad_root)}}
    config["limit_images"] = len(IMAGES)
    config["split"] = "grouped"
    config["segment"]["images_per_shard"] = len(IMAGES)
    config["release"]["rows_per_shard"] = 2
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(cfg), "--cores", "2", *SEGMENT_ONE_THREAD)
    return workdir / "results" / "release"


def _rows(release: Path, name: str) -> list[dict]:
    ds = datasets.load_dataset(str(release), name)
    assert all(ds[s].features == FEATURES for s in ds)
    return [row for split in ds for row in ds[split]]


def test_one_release_with_both_configs(release):
    manifest = json.loads((release / "manifest.json").read_text())
    assert set(manifest["datasets"]) == {"slake", "vqa_rad"}
    slake = manifest["datasets"]["slake"]
    acc = slake["accounting"]
    assert {k: acc[k] for k in ("input_records", "released_qa", "rejected_qa", "rejected_images")} == {
        "input_records": N_RECORDS,
        "released_qa": N_RECORDS - N_CHINESE - N_MALFORMED,
        "rejected_qa": N_CHINESE + N_MALFORMED,
        "rejected_images": 1,
    }
    assert sum(r["count"] for r in acc["by_reason"] if r["kind"] == "qa") == acc["rejected_qa"]
    rejects = [json.loads(line) for line in (release / slake["rejects_file"]).read_text().splitlines()]
    assert collections.Counter(r["reason"].split(" (")[0] for r in rejects) == {
        "question language 'zh' not selected": N_CHINESE,
        "malformed record: empty answer": 1,
        "malformed record: img_name 'xmlab4/source.jpg' does not match img_id 3": 1,
        "image folder has no QA record": 1,
    }
    for name in ("slake", "vqa_rad"):
        rows = _rows(release, name)
        split_of = {}
        for row in rows:
            assert split_of.setdefault(row["image_id"], row["split"]) == row["split"], "an image in two splits"
            assert row["image"].size == (row["width"], row["height"])
            # Views exist wherever a mask does (the Otsu source finds no box on some real images).
            assert (row["masked"] is not None) == bool(row["masks"]) == (row["medsam_unicolor"] is not None)
            if name == "slake":
                assert row["masks"]
            assert all(qa["localization_rule"] is None or qa["localization"] for qa in row["qa"])
        assert {r["split"] for r in rows} == {"train", "test"}
        counts = manifest["datasets"][name]["localization"]
        assert sum(c["qa"] for c in counts.values()) == manifest["datasets"][name]["accounting"]["released_qa"]
        tagged = sum(bool(qa["localization"]) for row in rows for qa in row["qa"])
        assert sum(c["localization"] for c in counts.values()) == tagged > 0
    card = (release / "README.md").read_text()
    assert "config_name: slake" in card and "config_name: vqa_rad" in card
    assert card.count("Localization tags (`qa.localization`") == 2 and "`slake:question_type=Organ` 4" in card
    assert "Source data: local files, not fetched by loclens" in card


def test_ingest_reports_localization_counts_per_split(release):
    log = (release.parent / "logs" / "ingest" / "slake.log").read_text()
    assert "slake test:" in log and "slake train:" in log and "anatomical" in log and "positioning" in log
    assert "vqa_rad train:" in (release.parent / "logs" / "ingest" / "vqa_rad.log").read_text()


def _image(cell) -> np.ndarray:
    return np.asarray(cell.convert("RGB"))


def test_expert_boxes_prompt_medsam_and_expert_masks_make_the_masked_view(release):
    rows = {Path(r["source_file"]).parent.name: r for r in _rows(release, "slake")}
    assert set(rows) == {f"xmlab{i}" for i in IMAGES} and "xmlab641" in rows, "every image checked, both kinds"
    organs = set(CLASS_NAMES.values())
    for folder, row in rows.items():
        expert = [m for m in row["masks"] if m["segmenter"] == "expert"]
        medsam = [m for m in row["masks"] if m["segmenter"] == "medsam"]
        assert medsam and all(m["checkpoint_sha256"].startswith("79d8c9dc") for m in medsam)
        if folder == "xmlab641":  # no expert annotations: Otsu boxes, masked view from MedSAM
            assert not expert and {m["prompt_source"] for m in medsam} == {"otsu"}
            assert row["provenance"]["masked_from"] == "medsam"
            continue
        assert {m["label"] for m in expert} <= organs and all(m["prompt_source"] is None for m in expert)
        assert {m["prompt_source"] for m in medsam} == {"expert"} and {m["label"] for m in medsam} <= organs
        assert row["provenance"]["masked_from"] == "expert"
        union = np.zeros((row["height"], row["width"]), bool)
        for m in expert:
            union |= rle.decode(m["rle"])
        masked, image = _image(row["masked"]), _image(row["image"])
        assert not masked[~union].any(), "outside the expert masks the masked view is black"
        assert np.array_equal(masked[union], image[union])


def test_litemedsam_masks_from_expert_boxes_overlap_the_expert_masks(release):
    """IoU of the union of LiteMedSAM masks prompted with an organ's expert boxes against that
    organ's expert mask, per (image, organ)."""
    ious = {}
    for row in _rows(release, "slake"):
        expert = {m["label"]: rle.decode(m["rle"]) for m in row["masks"] if m["segmenter"] == "expert"}
        shape = (row["height"], row["width"])
        predicted = collections.defaultdict(lambda shape=shape: np.zeros(shape, bool))
        for m in row["masks"]:
            if m["segmenter"] == "medsam" and m["prompt_source"] == "expert":
                predicted[m["label"]] |= rle.decode(m["rle"])
        for organ, truth in expert.items():
            pred = predicted[organ]
            ious[(Path(row["source_file"]).parent.name, organ)] = (pred & truth).sum() / (pred | truth).sum()
    assert len(ious) == sum(len(np.unique(ids)) - 1 for ids in expert_label_maps().values())  # every organ
    mean = float(np.mean(list(ious.values())))
    print("LiteMedSAM from expert boxes vs expert masks, IoU per (image, organ):")
    for key, value in sorted(ious.items()):
        print(f"  {key[0]} {key[1]}: {value:.3f}")
    print(f"mean IoU {mean:.3f} over {len(ious)} organ masks")
    assert mean >= 0.85  # measured 0.958 on CPU with the shipped LiteMedSAM weights
    assert min(ious.values()) >= 0.7
