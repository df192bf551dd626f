"""The generic Hugging Face-style VQA Parquet reader, on Parquet written by ``datasets``."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image

from loclens.config import ConfigError, validate
from loclens.ingest import check_accounting, read_jsonl, run_ingest
from loclens.sources import SourceError, read_source
from loclens.sources.sample import phantom_case


def _png(index: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(phantom_case(index)[1]).save(buf, format="PNG")
    return buf.getvalue()


def _write(root, split: str, rows: list[dict]) -> None:
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_list(rows, features=features)
    (root / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))


@pytest.fixture()
def hub_copy(tmp_path):
    root = tmp_path / "pathvqa"
    img = [{"bytes": _png(i), "path": f"img{i}.png"} for i in range(3)]
    _write(
        root,
        "train",
        [
            {"image": img[0], "question": "Where is the lesion?", "answer": "left lobe", "source": "a"},
            {"image": img[0], "question": "Is there a fracture?", "answer": "yes", "source": "a"},  # same image again
            {"image": img[1], "question": "What modality is this?", "answer": "ct", "source": "b"},
            {"image": img[1], "question": "What is shown?", "answer": "  ", "source": "b"},  # empty answer
        ],
    )
    _write(
        root,
        "test",
        [
            {"image": img[2], "question": "Is the liver visible in this image?", "answer": "no", "source": "c"},
            {"image": None, "question": "Which side is affected?", "answer": "right", "source": "c"},  # no image
        ],
    )
    return root


def test_reads_rows_dedupes_images_and_rejects_with_reasons(hub_copy, tmp_path):
    result = read_source("hf_parquet", hub_copy, dataset="pathvqa", unpack_dir=tmp_path / "unpacked")
    assert result.input_records == 6
    assert len(result.images) == 3, "rows repeating an image share one image record"
    reasons = {r.source_file: r.reason for r in result.rejects}
    assert reasons == {
        "data/train-00000-of-00001.parquet#row=3": "malformed record: empty 'answer'",
        "data/test-00000-of-00001.parquet#row=1": "malformed record: image cell of type NoneType",
    }
    qas = {qa.question: qa for image in result.images for qa in image.qa}
    assert qas["Is there a fracture?"].answer_type == "closed" and qas["Where is the lesion?"].answer_type == "open"
    assert qas["Where is the lesion?"].extra["answer_type_rule"].startswith("derived")
    assert qas["Where is the lesion?"].extra["source"] == "a" and qas["Where is the lesion?"].official_split == "train"
    assert qas["Is the liver visible in this image?"].official_split == "test"
    for image in result.images:
        data = open(image.path, "rb").read()
        assert image.image_id in image.path and np.asarray(Image.open(io.BytesIO(data))).shape[:2] == (
            image.height,
            image.width,
        )
        assert image.source_file.startswith("data/") and "#img" in image.source_file


def test_ingest_tags_by_keywords_and_accounts_for_every_row(hub_copy, tmp_path):
    config = validate(
        {"datasets": {"pathvqa": {"source": "hf_parquet", "path": str(hub_copy)}}, "resources": str(tmp_path / "res")}
    )
    plan = run_ingest("pathvqa", config, tmp_path / "out")
    check_accounting(plan)
    assert plan.input_records == 6 and plan.rejected_qa == 2
    rows = read_jsonl(tmp_path / "out" / "records.jsonl")
    tags = {qa["question"]: (qa["localization"], qa["localization_rule"]) for r in rows for qa in r["qa"]}
    assert tags["Where is the lesion?"] == (["positioning"], "keyword:where")
    assert tags["Is there a fracture?"] == (["anatomical"], "keyword:presence")
    assert tags["What modality is this?"] == ([], None)
    assert json.loads(rows[0]["qa"][0]["extra"])  # other columns kept verbatim
    assert {r["split"] for r in rows} == {"train", "test"}
    assert plan.localization["test"]["anatomical"] == 1


def test_column_names_are_configurable_and_checked(hub_copy, tmp_path):
    with pytest.raises(SourceError, match=r"missing column\(s\) \['caption'\]"):
        read_source("hf_parquet", hub_copy, dataset="x", unpack_dir=tmp_path / "u", columns={"answer": "caption"})
    result = read_source("hf_parquet", hub_copy, dataset="x", unpack_dir=tmp_path / "u", columns={"answer": "source"})
    assert {qa.answer for image in result.images for qa in image.qa} == {"a", "b", "c"}
    with pytest.raises(ConfigError, match=r"datasets.vqa_rad.columns: only for source hf_parquet"):
        validate({"datasets": {"vqa_rad": {"path": "x", "columns": {"image": "img"}}}})


def test_split_must_be_readable_from_the_file_name(tmp_path):
    root = tmp_path / "odd"
    _write(root, "train", [{"image": {"bytes": _png(0), "path": None}, "question": "q?", "answer": "a", "source": "s"}])
    (root / "data" / "train-00000-of-00001.parquet").rename(root / "data" / "part-0.parquet")
    with pytest.raises(SourceError, match="cannot tell the split"):
        read_source("hf_parquet", root, dataset="x", unpack_dir=tmp_path / "u")
