"""Bad input gives a clear error or a rejects entry naming the file; the rest proceeds."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from loclens.config import validate
from loclens.ingest import check_accounting, read_jsonl, run_ingest
from loclens.sources import SourceError, read_source
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME


def _png(value: int, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    arr = np.full(size[::-1], value, np.uint8)
    arr[10:30, 10:40] = 255 - value
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _record(qid, image, question="Is there a lesion?", answer="yes", **kw):
    rec = {
        "qid": qid,
        "phrase_type": "freeform",
        "qid_linked_id": f"l{qid}",
        "image_name": image,
        "image_organ": "CHEST",
        "question": question,
        "answer": answer,
        "answer_type": "CLOSED",
        "question_type": "PRES",
    }
    rec.update(kw)
    return rec


@pytest.fixture
def messy_release(tmp_path):
    root = tmp_path / "vqa"
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / IMAGE_DIR / "good.png").write_bytes(_png(40))
    (root / IMAGE_DIR / "also_good.png").write_bytes(_png(90))
    full = _png(120)
    (root / IMAGE_DIR / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / IMAGE_DIR / "not_an_image.jpg").write_bytes(b"this is text, not a JPEG")
    records = [
        _record(0, "good.png"),
        _record(1, "missing.png"),
        _record(2, "truncated.png"),
        _record(3, "not_an_image.jpg"),
        {"qid": 4, "image_name": "good.png", "answer": "no"},  # malformed: no question
        "not even an object",
        _record(5, "also_good.png", phrase_type="test_freeform"),
        _record(6, "../../escape.png"),
    ]
    (root / JSON_NAME).write_text(json.dumps(records))
    return root


def test_rejects_name_file_and_problem(messy_release):
    result = read_source("vqa_rad", messy_release, dataset="messy")
    assert result.input_records == 8
    assert sorted(qa.qid for img in result.images for qa in img.qa) == ["0", "5"]
    reasons = {r.qid: (r.source_file, r.reason) for r in result.rejects if r.kind == "qa"}
    assert "missing.png" in reasons["1"][0] and "not found" in reasons["1"][1]
    assert "truncated.png" in reasons["2"][0] and "truncated" in reasons["2"][1]
    assert "not_an_image.jpg" in reasons["3"][0] and "not a readable image" in reasons["3"][1]
    assert "missing key 'question'" in reasons["4"][1] and "[4]" in reasons["4"][0]
    assert "escapes the dataset root" in reasons["6"][1]
    non_object = [r for r in result.rejects if r.qid in (None, "None") and r.kind == "qa"]
    assert len(non_object) == 1 and "not an object" in non_object[0].reason
    assert len([r for r in result.rejects if r.kind == "qa"]) == 6


def test_ingest_accounts_for_every_record(messy_release, tmp_path):
    config = validate({"datasets": {"messy": {"source": "vqa_rad", "path": str(messy_release)}}})
    plan = run_ingest("messy", config, tmp_path / "out")
    check_accounting(plan)
    assert plan.input_records == 8 and plan.released_qa == 2 and plan.rejected_qa == 6
    rejects = read_jsonl(tmp_path / "out" / "rejects.jsonl")
    assert all(r["reason"] and r["source_file"] for r in rejects)
    rows = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert {r["split"] for r in rows} == {"train", "test"}


def test_unreadable_json_is_a_clear_error(tmp_path):
    root = tmp_path / "broken"
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / JSON_NAME).write_text('[{"qid": 1,')
    with pytest.raises(SourceError, match="VQA_RAD Dataset Public.json: not valid UTF-8 JSON"):
        read_source("vqa_rad", root, dataset="broken")
    with pytest.raises(SourceError, match="QA file not found"):
        read_source("vqa_rad", tmp_path / "nowhere", dataset="nowhere")


def test_duplicate_qids_are_reported(tmp_path):
    root = tmp_path / "dups"
    (root / IMAGE_DIR).mkdir(parents=True)
    (root / IMAGE_DIR / "a.png").write_bytes(_png(50))
    recs = [_record(1, "a.png"), _record(1, "a.png"), _record(1, "a.png", answer="no")]
    (root / JSON_NAME).write_text(json.dumps(recs))
    result = read_source("vqa_rad", root, dataset="dups")
    reasons = sorted(r.reason for r in result.rejects)
    assert reasons == [
        f"duplicate qid with conflicting content (vs {JSON_NAME}[0], which is kept)",
        f"duplicate record (identical to {JSON_NAME}[0], which is kept)",
    ]
    assert sum(len(i.qa) for i in result.images) == 1
