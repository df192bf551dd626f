"""Generic reader for Hugging Face-style VQA Parquet (PathVQA, PMC-VQA, Hub copies of VQA-RAD).

Layout: Parquet files under ``root`` (any depth, e.g. ``data/train-00000-of-00001.parquet``) or a
single Parquet file; the split comes from the file name (``train``, ``test``, ``validation``;
``val``, ``valid`` and ``dev`` mean validation). One row per QA pair with at least an image, a
question and an answer column (names configurable: ``columns: {image, question, answer}``).
The image cell may be a ``datasets.Image`` struct (``{"bytes", "path"}``), raw bytes, or a path
relative to the Parquet file.

Optional columns used when present: ``answer_type`` (open/closed), ``question_type`` (string or
list), ``qid``, ``lang``/``q_lang``. Without ``answer_type`` it is derived (documented in each
QA's ``extra.answer_type_rule``): answers "yes"/"no" are closed, all others open. Without a
language column the language is ``en``. Every other non-binary column is kept in ``extra``.
Such sources carry no question-type metadata, so localization tags come from keyword rules.

Images are identified by content hash (rows repeating an image share one image record) and
written once to ``unpack_dir/images/<image_id>.<ext>`` so that the segment and render stages
read them like any other source.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from ..atomic import write_bytes
from ..imageio import ImageError, probe, read_bytes
from ..provenance import image_id_from_bytes, sha256_bytes
from .base import QA, ImageRecord, IngestResult, Reject, SourceError, normalise_answer_type, safe_join

DEFAULT_COLUMNS = {"image": "image", "question": "question", "answer": "answer"}
SPLIT_NAMES = {
    "train": "train",
    "test": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}
_SPLIT = re.compile(r"^(train|test|validation|valid|val|dev)(?:[-_.]|$)", re.I)
YES_NO = {"yes", "no"}
ROWS_PER_BATCH = 64


def parquet_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(
        p for p in root.rglob("*.parquet") if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def input_files(root: Path) -> list[Path]:
    return parquet_files(root) if root.exists() else []


def split_of(path: Path) -> str:
    match = _SPLIT.match(path.name)
    if not match:
        raise SourceError(
            f"{path}: cannot tell the split from the file name (expected train-*, test-* or validation-*)"
        )
    return SPLIT_NAMES[match.group(1).lower()]


def _image_bytes(cell, parquet: Path) -> tuple[bytes, str | None]:
    """(encoded image bytes, original file name if known) from an image cell."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return cell["bytes"], cell.get("path")
        if cell.get("path"):
            return read_bytes(safe_join(parquet.parent, cell["path"])), cell["path"]
        raise ImageError("image cell has neither bytes nor path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell), None
    if isinstance(cell, str) and cell:
        return read_bytes(safe_join(parquet.parent, cell)), cell
    raise ImageError(f"image cell of type {type(cell).__name__}")


def _extension(data: bytes) -> str:
    fmt = (Image.open(io.BytesIO(data)).format or "png").lower()
    return {"jpeg": "jpg"}.get(fmt, fmt)


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None or isinstance(value, (bool, bytes, dict, list)):
        raise ValueError(f"{key!r} is missing or not text ({type(value).__name__})")
    text = str(value).strip()
    if not text:
        raise ValueError(f"empty {key!r}")
    return text


def _qa(row: dict, cols: dict, qid: str, split: str, extra: dict) -> QA:
    question = _text(row, cols["question"])
    answer = _text(row, cols["answer"])
    if row.get("answer_type") is not None:
        answer_type = normalise_answer_type(row["answer_type"])
    else:
        answer_type = "closed" if answer.lower() in YES_NO else "open"
        extra["answer_type_rule"] = "derived: yes/no answers are closed, others open"
    qtype = row.get("question_type")
    qtypes = [str(t).strip() for t in qtype] if isinstance(qtype, list) else ([str(qtype).strip()] if qtype else [])
    lang = str(row.get("lang") or row.get("q_lang") or "en").strip().lower()
    return QA(qid, question, answer, answer_type, [t for t in qtypes if t], lang, None, split, extra)


def read_hf_parquet(root, dataset: str = "hf_parquet", unpack_dir=None, columns: dict | None = None) -> IngestResult:
    root = Path(root)
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    files = input_files(root)
    if not files:
        raise SourceError(f"{root}: no Parquet files found (expected a Hugging Face-style VQA dataset)")
    if unpack_dir is None:
        raise SourceError(f"{root}: Parquet images need a folder to be written to (unpack_dir)")
    image_dir = Path(unpack_dir) / "images"
    base = root if root.is_dir() else root.parent
    known = {cols["image"], cols["question"], cols["answer"], "answer_type", "question_type", "qid", "lang", "q_lang"}

    images: dict[str, ImageRecord] = {}
    rejects: list[Reject] = []
    seen_qids: set[str] = set()
    total = 0
    for path in files:
        relative = str(path.relative_to(base)) if path != base else path.name
        split = split_of(path)
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        needed = [cols[k] for k in ("image", "question", "answer")]
        if not set(needed) <= names:
            raise SourceError(
                f"{path}: missing column(s) {sorted(set(needed) - names)}; has {sorted(names)} (set datasets.<name>.columns)"
            )
        index = 0
        for batch in pf.iter_batches(batch_size=ROWS_PER_BATCH):
            for row in batch.to_pylist():
                where = f"{relative}#row={index}"
                qid = str(row["qid"]) if row.get("qid") is not None else where
                index += 1
                total += 1
                extra = {k: v for k, v in row.items() if k not in known and not isinstance(v, (bytes, bytearray, dict))}
                extra["source_row"] = where
                record = {k: v for k, v in row.items() if k != cols["image"] and not isinstance(v, (bytes, bytearray))}
                if qid in seen_qids:
                    rejects.append(Reject(dataset, where, f"duplicate qid {qid!r}", qid=qid, record=record))
                    continue
                seen_qids.add(qid)
                try:
                    qa = _qa(row, cols, qid, split, extra)
                    data, name = _image_bytes(row.get(cols["image"]), path)
                    width, height = probe(data, where)
                except (ValueError, ImageError) as exc:
                    # An image error without its file's absolute path: the report is published.
                    problem = exc.problem if isinstance(exc, ImageError) else str(exc)
                    rejects.append(Reject(dataset, where, f"malformed record: {problem}", qid=qid, record=record))
                    continue
                image_id = image_id_from_bytes(data)
                if image_id not in images:
                    file = image_dir / f"{image_id}.{_extension(data)}"
                    if not file.exists():
                        write_bytes(file, data)
                    images[image_id] = ImageRecord(
                        dataset=dataset,
                        image_id=image_id,
                        image_sha256=sha256_bytes(data),
                        source_file=f"{relative}#{name}" if name else where,
                        path=str(file.resolve()),
                        width=width,
                        height=height,
                        modality=None,
                        body_region=None,
                    )
                images[image_id].qa.append(qa)
    return IngestResult(dataset, sorted(images.values(), key=lambda i: i.image_id), rejects, total)


__all__ = ["read_hf_parquet", "input_files", "parquet_files", "split_of"]
