"""The typed plan (plan.json): one reader and writer, the same bytes on disk."""

from __future__ import annotations

import json

import pytest

from loclens.ingest import make_plan, run_ingest
from loclens.plan import PLAN_FILE, Plan, PlanError, ReleaseShard, read_plan, write_plan


def _rows():
    # img1 has QA in both splits: the test shard copies its views from the train shard.
    return [
        {"image_id": "img0", "split": "train"},
        {"image_id": "img1", "split": "train"},
        {"image_id": "img1", "split": "test"},
        {"image_id": "img2", "split": "test"},
    ]


def test_plan_json_has_the_keys_every_stage_reads_and_reads_back_equal(tmp_path):
    plan = make_plan("x", _rows(), images_per_shard=2, rows_per_shard=2)
    write_plan(tmp_path / PLAN_FILE, plan)
    raw = json.loads((tmp_path / PLAN_FILE).read_text())
    assert raw["segment_shards"] == [["img0", "img1"], ["img2"]]
    assert raw["release_shards"][0] == {
        "split": "test",
        "index": 0,
        "total": 1,
        "file": "x/test-00000-of-00001.parquet",
        "image_ids": ["img1", "img2"],
        "segment_shards": [0, 1],
        "views_from": {},
    }
    assert raw["release_shards"][1]["views_from"] == {"x/test-00000-of-00001.parquet": ["img1"]}
    back = read_plan(tmp_path / PLAN_FILE)
    assert back == plan
    assert back.release_shard("train-00000-of-00001.parquet").copied_rows == 1
    assert back.release_shard("x/test-00000-of-00001.parquet").image_ids == ["img1", "img2"]
    assert back.rows == 4 and back.release_files == ["x/test-00000-of-00001.parquet", "x/train-00000-of-00001.parquet"]


def test_written_plan_is_byte_identical_after_a_read_write_round_trip(tmp_path):
    from conftest import small_config

    from loclens.ingest import ensure_sample

    config = small_config(tmp_path, release={"rows_per_shard": 2}, segment={"images_per_shard": 2})
    ensure_sample("sample", config["datasets"]["sample"], config)
    plan = run_ingest("sample", config, tmp_path / "ingest")
    first = (tmp_path / "ingest" / PLAN_FILE).read_bytes()
    assert plan.released_qa > 0 and plan.input_records == plan.released_qa + plan.rejected_qa
    write_plan(tmp_path / "again.json", read_plan(tmp_path / "ingest" / PLAN_FILE))
    assert (tmp_path / "again.json").read_bytes() == first
    run_ingest("sample", config, tmp_path / "ingest2")
    assert (tmp_path / "ingest2" / PLAN_FILE).read_bytes() == first


def test_a_file_that_is_not_a_plan_is_refused_naming_it(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"dataset": "x", "segment_shards": [], "release_shard": []}))
    with pytest.raises(PlanError, match=rf"{bad}.*unknown keys \['release_shard'\].*missing keys \['release_shards'\]"):
        read_plan(bad)
    bad.write_text(json.dumps({"dataset": "x", "segment_shards": [], "release_shards": [{"split": "train"}]}))
    with pytest.raises(PlanError, match=str(bad)):
        read_plan(bad)
    bad.write_text("{")
    with pytest.raises(PlanError, match="cannot read the plan"):
        read_plan(bad)


def test_unknown_shards_are_refused_with_the_plan_named():
    plan = Plan("x", [["a"]], [ReleaseShard("train", 0, 1, "x/train-00000-of-00001.parquet", ["a"], [0])])
    with pytest.raises(PlanError, match="not a release shard of the x plan"):
        plan.release_shard("test-00000-of-00001.parquet")
    with pytest.raises(PlanError, match="1 segment shards, not shard 3"):
        plan.segment_shard(3)


def test_records_are_read_and_written_by_one_reader_that_names_a_bad_line(tmp_path):
    from loclens.ingest import RECORD_KEYS, read_records, shard_rows, write_records

    row = {k: None for k in RECORD_KEYS} | {"image_id": "a", "split": "train", "qa": []}
    write_records(tmp_path / "records.jsonl", [row, {**row, "image_id": "b", "split": "test"}])
    assert [r["image_id"] for r in shard_rows(tmp_path / "records.jsonl", ["b"], "test")] == ["b"]
    with pytest.raises(ValueError, match="has keys"):
        write_records(tmp_path / "x.jsonl", [{**row, "extra_key": 1}])
    (tmp_path / "records.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({"image_id": "c"}) + "\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not a loclens record \(missing \["):
        read_records(tmp_path / "records.jsonl")
