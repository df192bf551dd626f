"""What one training sample is: an image row, two lens views drawn from it, and its text.

Phase ``align`` (1): one sample per image, text = its body region plus the organ names of its
expert masks (the labels of segmenter masks are prompt names such as ``otsu-body-0``, not organs).
Phase ``vqa`` (2): one sample per question, text = question and answer.

Lens views are drawn as the paper does (two of the three kinds unicolor / multicolor / masked, then
a source among those present in the row), with a random generator keyed on
``(seed, epoch, sample key)`` only: the same sample gets the same views whatever the sharding,
rank, worker or order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..provenance import seeded_int
from ..schema import VIEW_COLUMNS
from .reader import Release, decode_image

PHASES = ("align", "vqa")
#: Columns a sample needs, nested leaves spelled as pyarrow reads them.
TEXT_COLUMNS = [
    "image_id",
    "dataset",
    "modality",
    "body_region",
    "masks.list.element.segmenter",
    "masks.list.element.label",
    "qa",
]
#: Masks from this segmenter carry organ names as labels.
ORGAN_LABEL_SEGMENTER = "expert"
#: QA of this question type answer with organ words (VQA-RAD).
ORGAN_QUESTION_TYPE = "ORGAN"


@dataclass(frozen=True)
class SampleRef:
    """A sample's place in a release: unit (row group) index, row within it, QA index (-1: none)."""

    unit: int
    row: int
    qa: int = -1


def check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"unknown training phase {phase!r}; known: {PHASES}")


def unit_refs(release: Release, phase: str) -> list[list[SampleRef]]:
    """Samples of every unit, in row order. Phase 2 reads only the QA ids to count questions."""
    check_phase(phase)
    if phase == "align":
        return [[SampleRef(u, r) for r in range(unit.num_rows)] for u, unit in enumerate(release.units)]
    refs = []
    for u, unit in enumerate(release.units):
        qids = release.read(unit, ["qa.list.element.qid"]).column("qa").to_pylist()
        refs.append([SampleRef(u, r, q) for r, qa in enumerate(qids) for q in range(len(qa or []))])
    return refs


def qa_organ_words(row: dict) -> set[str]:
    """Organ words an image's own QA state: answers of open questions typed ``ORGAN`` (VQA-RAD's
    question_type, e.g. "What organ is shown?" -> "brain")."""
    words = set()
    for qa in row.get("qa") or []:
        types = {str(t).strip().upper() for t in qa.get("question_type") or []}
        if ORGAN_QUESTION_TYPE in types and qa.get("answer_type") == "open" and qa.get("answer"):
            for part in str(qa["answer"]).lower().replace("\t", ",").split(","):
                part = part.strip().removeprefix("the ").strip()
                if part:
                    words.add(part)
    return words


def align_text(row: dict) -> str:
    """Organ / body-region text of an image for phase 1, e.g. ``abdomen: liver, spleen``: its body
    region, the organ names of its expert masks (SLAKE) and the organ words of its QA (VQA-RAD)."""
    organs = sorted(
        {m["label"] for m in row.get("masks") or [] if m.get("segmenter") == ORGAN_LABEL_SEGMENTER and m.get("label")}
        | qa_organ_words(row)
    )
    region = row.get("body_region") or row.get("modality") or "medical image"
    return f"{region}: {', '.join(organs)}" if organs else region


def qa_text(qa: dict) -> str:
    """Question and answer as one text for phase 2."""
    return f"question: {qa['question']} answer: {qa['answer']}"


def sample_key(row: dict, ref: SampleRef) -> str:
    return row["image_id"] if ref.qa < 0 else f"{row['image_id']}/{row['qa'][ref.qa]['qid']}"


def view_kind(column: str) -> str:
    """A lens view column's kind: ``unicolor``, ``multicolor`` or ``masked``."""
    return column.rsplit("_", 1)[-1]


def choose_views(row: dict, key: str, seed: int, epoch: int, allowed: tuple[str, ...], k: int) -> list[str]:
    """``k`` lens views of ``row`` as the paper draws them: ``k`` distinct kinds among those the
    row has (fewer if fewer exist), then for each kind one source among those present; drawn per
    (seed, epoch, key)."""
    by_kind: dict[str, list[str]] = {}
    for c in VIEW_COLUMNS:
        if c in allowed and row.get(c) is not None:
            by_kind.setdefault(view_kind(c), []).append(c)
    rng = random.Random(seeded_int(seed, epoch, key, "views"))
    kinds = rng.sample(sorted(by_kind), min(k, len(by_kind)))
    return [rng.choice(by_kind[kind]) for kind in kinds]


def make_sample(row: dict, ref: SampleRef, seed: int, epoch: int, allowed: tuple[str, ...], k: int, where: str) -> dict:
    """A decoded sample: ``images`` (original first, then lens views, HxWx3 uint8), their
    column names, the text, and the ids that tell which in-batch pairs are not negatives."""
    key = sample_key(row, ref)
    views = choose_views(row, key, seed, epoch, allowed, k)
    columns = ["image", *views]
    images = [decode_image(row[c], f"{where}: image {row['image_id']} column {c}") for c in columns]
    if ref.qa < 0:
        text, question, answer = align_text(row), None, None
    else:
        qa = row["qa"][ref.qa]
        text, question, answer = qa_text(qa), qa["question"], qa["answer"]
    return {
        "key": key,
        "image_id": row["image_id"],
        "dataset": row.get("dataset"),
        "images": images,
        "columns": columns,
        "text": text,
        "question": question,
        "answer": answer,
    }
