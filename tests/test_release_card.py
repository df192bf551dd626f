"""The dataset card and the loading API on a real (small) release."""

from __future__ import annotations

import datasets
import pytest
import yaml
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard

import loclens
from loclens.loading import LoadError
from loclens.release.card import front_matter, license_metadata
from loclens.schema import FEATURES, VIEW_COLUMNS


def test_card_round_trips_through_datasetcard_and_matches_the_shards(small_release):
    path = small_release.release / "README.md"
    card = DatasetCard.load(path)
    assert DatasetCard(str(card)).data.to_dict() == card.data.to_dict()  # serialises back unchanged
    meta = card.data.to_dict()
    assert meta["license"] == "cc0-1.0"
    assert meta["pretty_name"] == small_release.config["release"]["pretty_name"]
    assert meta["task_categories"] == ["visual-question-answering", "image-segmentation"]
    assert "medical" in meta["tags"] and meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["original"]
    assert "extra_gated_prompt" not in meta
    assert meta["configs"] == [
        {
            "config_name": "sample",
            "data_files": [
                {"split": "test", "path": "sample/test-*.parquet"},
                {"split": "train", "path": "sample/train-*.parquet"},
            ],
        }
    ]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos["sample"].features == FEATURES
    ds = datasets.load_dataset(str(small_release.release), "sample")
    assert {s: len(ds[s]) for s in ds} == {s: infos["sample"].splits[s].num_examples for s in ds}

    text = card.text
    front = yaml.safe_load(path.read_text().split("---\n")[1])  # plain YAML, as the Hub reads it
    assert front["dataset_info"][0]["config_name"] == "sample"
    for needle in (
        "79d8c9dca6db4d69",
        "N(0.5, 0.1)",
        "clipped to [0.2, 0.8]",
        "seed **0**",
        "`otsu`",
        "max_prompts=8",
        "Split protocol `grouped`",
        "segmenter not run",
        "Not for clinical use",
        "machine-generated",
        "@inproceedings{kirillov2023sam",
        "@article{ma2024medsam",
        "@article{lau2018vqarad",
        "@inproceedings{liu2021slake",
        "farooq2025loclens",
        "rejects/sample.jsonl",
        "CC0 1.0",
        "segmented at its full resolution",
        "`segment.read_max_side: null`",
    ):
        assert needle in text, needle
    # counts per split and view are in the card and equal the shards'
    for split in ds:
        present = {v: sum(r is not None for r in ds[split][v]) for v in VIEW_COLUMNS}
        row = (
            f"| {split} | {len(ds[split])} | {sum(len(q) for q in ds[split]['qa'])} | "
            + " | ".join(str(present[v]) for v in VIEW_COLUMNS)
            + " |"
        )
        assert row in text, row


def test_datasets_load_dataset_picks_up_configs_and_splits(small_release):
    ds = datasets.load_dataset(str(small_release.release))  # one config: no name needed
    assert set(ds) == {"train", "test"}
    assert ds["train"].features == FEATURES
    row = ds["test"][0]
    assert row["image"].size == (row["width"], row["height"])
    assert row["medsam_multicolor"].size == row["image"].size


def test_mixed_licenses_and_gating_in_the_front_matter(small_release):
    entry = {"source": "vqa_rad", "splits": {"train": {"rows": 2, "shards": [{"bytes": 10}]}}}
    manifest = {"datasets": {"vqa_rad": entry, "slake": {**entry, "source": "slake"}}}
    lic = license_metadata(manifest["datasets"])
    assert lic["license"] == "other" and lic["license_name"] == "cc-by-4.0-and-cc0-1.0"
    assert "config slake: CC BY 4.0" in lic["license_details"] and "config vqa_rad: CC0 1.0" in lic["license_details"]
    cfg = {"pretty_name": "x", "gating": {"prompt": "Research use only.", "fields": {"Affiliation": "text"}}}
    meta = front_matter(manifest, cfg)
    assert meta["extra_gated_prompt"] == "Research use only."
    assert meta["extra_gated_fields"] == {"Affiliation": "text"}
    assert meta["source_datasets"] == ["extended|BoKelvin/SLAKE", "extended|flaviagiammarino/vqa-rad"]
    assert meta["language"] == ["en", "zh"]
    assert DatasetCard("---\n" + yaml.safe_dump(meta) + "---\n").data.license == "other"


def test_load_local_release_in_memory_and_streaming(small_release):
    train = loclens.load(small_release.release, dataset="sample", split="train")
    streamed = loclens.load(small_release.release, split="train", streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    rows = list(streamed)
    assert [r["image_id"] for r in rows] == train["image_id"]
    assert rows[0]["medsam_unicolor"].size == rows[0]["image"].size
    assert set(loclens.load(small_release.release)) == {"train", "test"}
    with pytest.raises(LoadError, match="no dataset 'slake'"):
        loclens.load(small_release.release, dataset="slake")
    with pytest.raises(LoadError, match="no split 'validation'"):
        loclens.load(small_release.release, split="validation")
    with pytest.raises(LoadError, match="not a complete loclens release"):
        loclens.load(small_release.release / "sample")


def test_coverage_by_region_is_in_the_manifest_and_the_card_and_matches_the_rows(small_release):
    """The manifest records, per body region, the images with each segmenter's views; the
    card prints that table; both equal a recount of the released rows (each image once)."""
    import json

    manifest = json.loads((small_release.release / "manifest.json").read_text())
    cov = manifest["datasets"]["sample"]["coverage"]
    ds = datasets.load_dataset(str(small_release.release), "sample")
    images = {}
    for split in ds:
        for row in ds[split].select_columns(["image_id", "body_region", "medsam_unicolor"]):
            images[row["image_id"]] = (row["body_region"], row["medsam_unicolor"] is not None)
    regions = sorted({r for r, _ in images.values()})
    assert cov["segmenters"] == ["medsam"] and list(cov["regions"]) == regions
    for region in regions:
        mine = [covered for r, covered in images.values() if r == region]
        assert cov["regions"][region] == {"images": len(mine), "medsam": sum(mine)}
    assert cov["all"] == {"images": len(images), "medsam": sum(c for _, c in images.values())}
    text = (small_release.release / "README.md").read_text()
    assert "| body region | images | with `medsam_*` views |" in text
    for region in regions:
        c = cov["regions"][region]
        assert f"| {region} | {c['images']} | {c['medsam']} ({100 * c['medsam'] / c['images']:.1f}%) |" in text
    assert f"| **all** | {len(images)} |" in text
