"""Normalised ingest records shared by all source readers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..imageio import ImageError, probe, read_bytes
from ..provenance import image_id_from_bytes, sha256_bytes


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
