"""Reader for the original VQA-RAD release (Lau et al. 2018, OSF layout).

Layout: ``VQA_RAD Dataset Public.json`` (a list of QA records) and ``VQA_RAD Image Folder/``.
Quirks handled (see the dataset README): the split lives in ``phrase_type``; ``qid`` can be a
string; answers can be JSON integers; ``answer_type`` can carry a trailing space;
``question_type`` can be comma-joined and misspelt; keys can be missing; "NULL" means missing;
CLOSED is not the same as yes/no.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..imageio import ImageError
from .base import QA, ImageRecord, IngestResult, Reject, SourceError, load_image_record

JSON_NAME = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"

#: phrase_type -> official split.
PHRASE_SPLIT = {"freeform": "train", "para": "train", "test_freeform": "test", "test_para": "test"}

#: Misspellings of question_type labels seen in the release, mapped to the canonical label.
QUESTION_TYPE_FIXES = {"ATRIB": "ATTRIB", "PRSE": "PRES", "OTHER": "OTHER"}

#: image_organ -> body_region.
BODY_REGIONS = {"HEAD": "head", "CHEST": "chest", "ABD": "abdomen"}

#: Keys mapped onto QA fields; everything else goes to ``extra`` verbatim.
CORE_KEYS = {"qid", "question", "answer", "answer_type", "question_type", "phrase_type", "qid_linked_id", "image_name"}

#: VQA-RAD has no modality field; it is inferred from the answers to MODALITY questions.
MODALITY_PATTERNS = [
    ("MRI", re.compile(r"\b(mri|mr|t1|t2|flair|dwi)\b")),
    ("CT", re.compile(r"\bct\b|computed tomography")),
    ("X-Ray", re.compile(r"x-?ray|radiograph|\bxr\b|plain film")),
    ("Ultrasound", re.compile(r"ultrasound|\bus\b")),
]


def _null(value):
    return None if value in ("NULL", "", None) else value


def _question_types(raw) -> list[str]:
    labels = []
    for part in str(raw or "").split(","):
        label = part.strip().upper()
        if label:
            labels.append(QUESTION_TYPE_FIXES.get(label, label))
    return labels


def _parse_qa(rec: dict) -> QA:
    """Normalise one record; raise ValueError with the problem for malformed ones."""
    for key in ("question", "answer", "answer_type", "image_name", "phrase_type"):
        if key not in rec or rec[key] is None:
            raise ValueError(f"missing key {key!r}")
    question = rec["question"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError("empty or non-text question")
    answer = rec["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise ValueError(f"answer of type {type(answer).__name__}")
    answer = str(answer).strip()
    answer_type = str(rec["answer_type"]).strip().lower()
    if answer_type not in ("open", "closed"):
        raise ValueError(f"unknown answer_type {rec['answer_type']!r}")
    phrase = str(rec["phrase_type"]).strip()
    if phrase not in PHRASE_SPLIT:
        raise ValueError(f"unknown phrase_type {phrase!r}")
    extra = {k: _null(v) for k, v in rec.items() if k not in CORE_KEYS}
    extra["phrase_type"] = phrase
    extra["question_type_raw"] = rec.get("question_type")
    return QA(
        qid=str(rec.get("qid")),
        question=question.strip(),
        answer=answer,
        answer_type=answer_type,
        question_type=_question_types(rec.get("question_type")),
        lang="en",
        linked_id=_null(rec.get("qid_linked_id")),
        official_split=PHRASE_SPLIT[phrase],
        extra=extra,
    )


def infer_modality(qas: list[QA]) -> str | None:
    for qa in qas:
        if "MODALITY" in qa.question_type:
            text = qa.answer.lower()
            for name, pattern in MODALITY_PATTERNS:
                if pattern.search(text):
                    return name
    return None


def _load_json(json_path: Path) -> list:
    try:
        data = json.loads(json_path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{json_path}: QA file not found (expected the VQA-RAD release layout)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{json_path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, list):
        raise SourceError(f"{json_path}: expected a JSON list of QA records, got {type(data).__name__}")
    return data


def read_vqa_rad(root, dataset: str = "vqa_rad", json_name: str = JSON_NAME, image_dir: str = IMAGE_DIR) -> IngestResult:
    root = Path(root)
    json_path = root / json_name
    records = _load_json(json_path)
    images_root = root / image_dir
    if not images_root.is_dir():
        raise SourceError(f"{images_root}: image folder not found")

    rejects: list[Reject] = []
    by_name: dict[str, list[QA]] = {}
    seen_qids: dict[str, dict] = {}
    for index, rec in enumerate(records):
        where = f"{json_name}[{index}]"
        if not isinstance(rec, dict):
            rejects.append(Reject(dataset, where, f"record is a {type(rec).__name__}, not an object", record=rec))
            continue
        qid = str(rec.get("qid"))
        try:
            qa = _parse_qa(rec)
        except ValueError as exc:
            rejects.append(Reject(dataset, where, f"malformed record: {exc}", qid=qid, record=rec))
            continue
        if qid in seen_qids:
            same = seen_qids[qid] == rec
            reason = "duplicate record (identical to an earlier one)" if same else "duplicate qid with conflicting content"
            rejects.append(Reject(dataset, where, reason, qid=qid, record=rec))
            continue
        seen_qids[qid] = rec
        by_name.setdefault(str(rec["image_name"]), []).append(qa)

    images: dict[str, ImageRecord] = {}
    for name in sorted(by_name):
        qas = by_name[name]
        try:
            image = load_image_record(dataset, root, images_root, name)
        except ImageError as exc:
            rejects.extend(Reject(dataset, f"{image_dir}/{name}", str(exc), qid=qa.qid) for qa in qas)
            continue
        if image.image_id in images:
            # The same pixels under another file name: one image, all QA kept.
            images[image.image_id].qa.extend(qas)
            continue
        image.qa = qas
        images[image.image_id] = image

    referenced = set(by_name)
    for path in sorted(p for p in images_root.iterdir() if p.is_file()):
        if path.name not in referenced:
            rejects.append(Reject(dataset, f"{image_dir}/{path.name}", "image has no QA record", kind="image"))

    for image in images.values():
        organs = {str(qa.extra.get("image_organ", "")).strip().upper() for qa in image.qa}
        regions = sorted({BODY_REGIONS.get(o, o.lower()) for o in organs if o})
        image.body_region = ",".join(regions) or None
        image.modality = infer_modality(image.qa)
    return IngestResult(dataset, sorted(images.values(), key=lambda i: i.image_id), rejects, len(records))
