"""Normalised ingest records shared by all source readers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import LoclensError
from ..imageio import ImageError, probe, read_bytes
from ..provenance import image_id_from_bytes, sha256_bytes
from ..schema import ANSWER_TYPES


def normalise_question(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("empty or non-text question")
    return value.strip()


def normalise_answer(value) -> str:
    """Answers are text; JSON numbers (VQA-RAD has some) become their text. An empty answer
    teaches nothing and would match any empty prediction: rejected."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"answer of type {type(value).__name__}")
    answer = str(value).strip()
    if not answer:
        raise ValueError("empty answer")
    return answer


def normalise_answer_type(value) -> str:
    """``OPEN``, ``"CLOSED "`` ... -> open | closed (each dataset's official label, kept as is)."""
    answer_type = str(value).strip().lower()
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {value!r}")
    return answer_type


class SourceError(LoclensError, ValueError):
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
        # Undecodable bytes in a source (kept as surrogates) cannot be written as UTF-8; the
        # report shows them escaped instead of failing the whole ingest.
        return printable(asdict(self))


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
        """The QA struct as stored in the release (the `qa` struct of schema.FEATURES)."""
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
    # (prompt source ``expert``); masks are entries of the `masks` struct of schema.FEATURES with segmenter ``expert``.
    expert_boxes: list[dict] = field(default_factory=list)
    expert_masks: list[dict] = field(default_factory=list)


@dataclass
class IngestResult:
    dataset: str
    images: list[ImageRecord]
    rejects: list[Reject]
    input_records: int


def printable(obj):
    """``obj`` with every string made encodable as UTF-8: lone surrogates (from undecodable
    bytes read with ``surrogateescape``, or from ``\\udXXX`` escapes in JSON) become
    backslash escapes such as ``\\xe9``."""
    if isinstance(obj, str):
        if not has_surrogates(obj):
            return obj
        try:
            return obj.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, dict):
        return {printable(k): printable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable(v) for v in obj]
    return obj


def has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def invalid_text_field(obj, path: str = "") -> str | None:
    """The first field (dotted path) of a record whose text is not valid Unicode, else None."""
    if isinstance(obj, str):
        return path or "<value>" if has_surrogates(obj) else None
    items: Iterable[tuple[object, object]]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        if isinstance(key, str) and has_surrogates(key):
            return f"{path}.{printable(key)}".lstrip(".")
        found = invalid_text_field(value, f"{path}.{key}".lstrip("."))
        if found:
            return found
    return None


def safe_join(root: Path, relative: str) -> Path:
    """Join a source-provided relative path under ``root``; refuse paths that escape it
    (``../``, absolute paths, symbolic links pointing outside)."""
    if not relative or "\x00" in relative:
        raise ImageError(printable(repr(relative)), "not a valid file name")
    candidate = (root / relative).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise ImageError(printable(relative), "path escapes the dataset root")
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


def load_json_list(
    path: Path, what: str, error: type[ValueError] = SourceError, keep_undecodable: bool = False
) -> list:
    """A JSON list from ``path`` (UTF-8, BOM tolerated); ``error`` naming the file otherwise.

    ``keep_undecodable`` (for lists of QA records): bytes that are not UTF-8 are kept as
    surrogates (``surrogateescape``) so that ``group_records`` rejects only the records holding
    them, not the whole file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig", "surrogateescape" if keep_undecodable else "strict"))
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a JSON file") from None
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
    seen: dict[str, tuple[dict, str]],
    grouped: dict[str, list[QA]],
) -> list[Reject]:
    """Add each record's QA to ``grouped[image file]``; return the rejects with their reasons.

    ``parse`` maps a record to (QA, image file) or raises ValueError naming the problem;
    ``seen`` (qid -> (record, where)) spans every file of a source, so duplicates across files
    are caught. Records holding text that is not valid UTF-8 are rejected before parsing.
    """
    rejects = []
    for index, rec in enumerate(records):
        where = f"{file_name}[{index}]"
        if not isinstance(rec, dict):
            rejects.append(Reject(dataset, where, f"record is a {type(rec).__name__}, not an object", record=rec))
            continue
        try:
            bad_text = invalid_text_field(rec)
            if bad_text:
                raise ValueError(f"field {bad_text!r} is not valid UTF-8 text")
            qa, image_file = parse(rec)
        except ValueError as exc:
            qid = None if rec.get("qid") is None else printable(str(rec["qid"]))
            rejects.append(Reject(dataset, where, f"malformed record: {exc}", qid=qid, record=rec))
            continue
        if qa.qid in seen:
            first, first_where = seen[qa.qid]
            kind = "duplicate record (identical to" if first == rec else "duplicate qid with conflicting content (vs"
            rejects.append(Reject(dataset, where, f"{kind} {first_where}, which is kept)", qid=qa.qid, record=rec))
            continue
        seen[qa.qid] = (rec, where)
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
            # The reason without the absolute path (the report is published; the file is named).
            rejects.extend(Reject(dataset, f"{shown.as_posix()}/{name}", exc.problem, qid=qa.qid) for qa in qas)
            continue
        if image.image_id in images:
            images[image.image_id].qa.extend(qas)
            continue
        image.qa = list(qas)
        images[image.image_id] = image
    return images, rejects
