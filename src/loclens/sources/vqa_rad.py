"""Reader for the original VQA-RAD release (Lau et al. 2018, OSF layout).

Layout: ``VQA_RAD Dataset Public.json`` (a list of QA records) and ``VQA_RAD Image Folder/``.
Quirks handled (see the dataset README): the split lives in ``phrase_type``; ``qid`` can be a
string; answers can be JSON integers; ``answer_type`` can carry a trailing space;
``question_type`` can be comma-joined and misspelt; keys can be missing; "NULL" means missing;
CLOSED is not the same as yes/no.
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import (
    QA,
    IngestResult,
    Reject,
    SourceError,
    group_records,
    load_images,
    load_json_list,
    normalise_answer,
    normalise_answer_type,
    normalise_question,
)

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
    for key in ("qid", "question", "answer", "answer_type", "image_name", "phrase_type"):
        if key not in rec or rec[key] is None:
            raise ValueError(f"missing key {key!r}")
    question = normalise_question(rec["question"])
    answer = normalise_answer(rec["answer"])
    answer_type = normalise_answer_type(rec["answer_type"])
    if not isinstance(rec["image_name"], str) or not rec["image_name"].strip():
        raise ValueError("empty or non-text image_name")
    phrase = str(rec["phrase_type"]).strip()
    if phrase not in PHRASE_SPLIT:
        raise ValueError(f"unknown phrase_type {phrase!r}")
    extra = {k: _null(v) for k, v in rec.items() if k not in CORE_KEYS}
    extra["phrase_type"] = phrase
    extra["question_type_raw"] = rec.get("question_type")
    return QA(
        qid=str(rec.get("qid")),
        question=question,
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
    if not json_path.is_file():
        raise SourceError(f"{json_path}: QA file not found (expected the VQA-RAD release layout)")
    return load_json_list(json_path, "QA records", keep_undecodable=True)


def _parse(rec: dict) -> tuple[QA, str]:
    return _parse_qa(rec), str(rec["image_name"])


def read_vqa_rad(
    root, dataset: str = "vqa_rad", json_name: str = JSON_NAME, image_dir: str = IMAGE_DIR
) -> IngestResult:
    root = Path(root)
    json_path = root / json_name
    records = _load_json(json_path)
    images_root = root / image_dir
    if not images_root.is_dir():
        raise SourceError(f"{images_root}: image folder not found")

    by_name: dict[str, list[QA]] = {}
    rejects = group_records(dataset, records, json_name, _parse, {}, by_name)
    images, image_rejects = load_images(dataset, root, images_root, {n: by_name[n] for n in sorted(by_name)})
    rejects += image_rejects

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
