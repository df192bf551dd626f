"""Normalised ingest records shared by all source readers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..imageio import ImageError, probe, read_bytes
from ..provenance import image_id_from_bytes, sha256_bytes
from ..schema import ANSWER_TYPES


def normalise_question(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("empty or non-text question")
    return value.strip()


def normalise_answer(value) -> str:
    """Answers are text; JSON numbers (VQA-RAD has some) become their text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"answer of type {type(value).__name__}")
    return str(value).strip()


def normalise_answer_type(value) -> str:
    """``OPEN``, ``"CLOSED "`` ... -> open | closed (each dataset's official label, kept as is)."""
    answer_type = str(value).strip().lower()
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {value!r}")
    return answer_type


class SourceError(ValueError):
    """A source that cannot be read at all (missing or malformed top-level file)."""


@dataclass
class Reject:
    """An input record (or image) that does not reach the release, and why."""

    dataset: str
    source_file: str
    reason: str
    qid: str | None = None
    record: dict | None = None  # the raw input record, verbatim where JSON-able
    kind: str = "qa"  # "qa": an input QA record; "image": an image file no QA refers to

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QA:
    qid: str
    question: str
    answer: str
    answer_type: str  # open | closed
    question_type: list[str]
    lang: str
    linked_id: str | None
    official_split: str | None  # the source's own split label for this QA, if any
    extra: dict = field(default_factory=dict)
    # Set at ingest by loclens.localization (the paper's localization categories).
    localization: list[str] = field(default_factory=list)
    localization_rule: str | None = None

    def to_row(self) -> dict:
        """The QA struct as stored in the release (see schema.QA_FEATURE)."""
        row = {k: v for k, v in asdict(self).items() if k not in ("official_split", "extra")}
        row["extra"] = json.dumps(self.extra, sort_keys=True, ensure_ascii=False)
        return row


@dataclass
class ImageRecord:
    dataset: str
    image_id: str
    image_sha256: str
    source_file: str  # relative to the dataset root
    path: str  # absolute path read at segmentation / render time
    width: int
    height: int
    modality: str | None
    body_region: str | None
    qa: list[QA] = field(default_factory=list)
    # Expert annotations (SLAKE): boxes [{"label", "box": [x, y, w, h]}] become MedSAM prompts
    # (prompt source ``expert``); masks are schema.MASK_FEATURE entries with segmenter ``expert``.
    expert_boxes: list[dict] = field(default_factory=list)
    expert_masks: list[dict] = field(default_factory=list)


@dataclass
class IngestResult:
    dataset: str
    images: list[ImageRecord]
    rejects: list[Reject]
    input_records: int


def safe_join(root: Path, relative: str) -> Path:
    """Join a source-provided relative path under ``root``; refuse paths that escape it."""
    candidate = (root / relative).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise ImageError(f"{relative}: path escapes the dataset root {root}")
    return candidate


def load_image_record(dataset: str, root: Path, image_dir: Path, relative: str) -> ImageRecord:
    """Read, hash and fully decode one image; raise ImageError naming the file otherwise."""
    path = safe_join(image_dir, relative)
    data = read_bytes(path)
    width, height = probe(data, str(path))
    return ImageRecord(
        dataset=dataset,
        image_id=image_id_from_bytes(data),
        image_sha256=sha256_bytes(data),
        source_file=str(path.relative_to(root.resolve())),
        path=str(path),
        width=width,
        height=height,
        modality=None,
        body_region=None,
    )


def load_json_list(path: Path, what: str, error: type[ValueError] = SourceError) -> list:
    """A JSON list from ``path`` (UTF-8, BOM tolerated); ``error`` naming the file otherwise."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, list):
        raise error(f"{path}: expected a JSON list of {what}, got {type(data).__name__}")
    return data


def group_records(
    dataset: str,
    records: list,
    file_name: str,
    parse: Callable[[dict], tuple[QA, str]],
    seen: dict[str, dict],
    grouped: dict[str, list[QA]],
) -> list[Reject]:
    """Add each record's QA to ``grouped[image file]``; return the rejects with their reasons.

    ``parse`` maps a record to (QA, image file) or raises ValueError naming the problem;
    ``seen`` (qid -> record) spans every file of a source, so duplicates across files are caught.
    """
    rejects = []
    for index, rec in enumerate(records):
        where = f"{file_name}[{index}]"
        if not isinstance(rec, dict):
            rejects.append(Reject(dataset, where, f"record is a {type(rec).__name__}, not an object", record=rec))
            continue
        try:
            qa, image_file = parse(rec)
        except ValueError as exc:
            qid = None if rec.get("qid") is None else str(rec["qid"])
            rejects.append(Reject(dataset, where, f"malformed record: {exc}", qid=qid, record=rec))
            continue
        if qa.qid in seen:
            same = seen[qa.qid] == rec
            reason = "duplicate record (identical to an earlier one)" if same else "duplicate qid with conflicting content"
            rejects.append(Reject(dataset, where, reason, qid=qa.qid, record=rec))
            continue
        seen[qa.qid] = rec
        grouped.setdefault(image_file, []).append(qa)
    return rejects


def load_images(
    dataset: str, root: Path, image_dir: Path, qa_by_file: dict[str, list[QA]]
) -> tuple[dict[str, ImageRecord], list[Reject]]:
    """Image records (by image_id) for ``qa_by_file`` (image file relative to ``image_dir`` ->
    its QA), in that dict's order. The same pixels under another name are one image with all
    QA (the first file's record); an unreadable image rejects its QA naming the file."""
    images: dict[str, ImageRecord] = {}
    rejects: list[Reject] = []
    shown = image_dir.resolve().relative_to(root.resolve())
    for name, qas in qa_by_file.items():
        try:
            image = load_image_record(dataset, root, image_dir, name)
        except ImageError as exc:
            rejects.extend(Reject(dataset, f"{shown.as_posix()}/{name}", str(exc), qid=qa.qid) for qa in qas)
            continue
        if image.image_id in images:
            images[image.image_id].qa.extend(qas)
            continue
        image.qa = list(qas)
        images[image.image_id] = image
    return images, rejects
