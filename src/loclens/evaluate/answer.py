"""Answering: a trained model's predictions for every test question, written with their scores.

Inference uses the original image only (the paper: lens views are a training-time signal).

- Contrastive models *rank* candidate answers against the image and question. Candidates are the
  distinct training answers of the same dataset (distinct after ``normalize_answer``, shown in
  their most frequent spelling); a closed question is ranked among the answers of closed training
  questions, an open question among those of open training questions, since each dataset's
  official ``answer_type`` is known at test time. A test answer that never occurs in training
  cannot be ranked first; ``in_candidates`` records this per question so the tables can report
  the ceiling (``candidate_coverage``).
- Generative models generate free text; the metrics normalise it (``metrics.normalize_answer``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..atomic import atomic_path, write_jsonl
from ..imageio import load_rgb
from .metrics import normalize_answer
from .tags import localization_tags

#: Columns of a prediction row (JSONL keys / Parquet columns).
PREDICTION_FIELDS = (
    "dataset",
    "split",
    "image_id",
    "qid",
    "question",
    "answer",
    "answer_type",
    "question_type",
    "tags",
    "prediction",
    "score",
    "top_k",
    "in_candidates",
    "method",
)

PREDICTION_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("image_id", pa.string()),
        ("qid", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_type", pa.string()),
        ("question_type", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("prediction", pa.string()),
        ("score", pa.float64()),
        ("top_k", pa.list_(pa.struct([("answer", pa.string()), ("score", pa.float64())]))),
        ("in_candidates", pa.bool_()),
        ("method", pa.string()),
    ]
)


def iter_rows(release, dataset: str, split: str, with_image: bool = True) -> Iterator[dict]:
    """Rows of one dataset and split of a release (a folder or ``hf://datasets/...``, read as
    training reads it), one row group at a time; lens views are never read."""
    from ..train.reader import open_release

    opened = open_release(release, split=split, datasets=[dataset])
    columns = ["image_id", "dataset", "split", "qa"] + (["image"] if with_image else [])
    for unit in opened.units:
        yield from opened.read(unit, columns).to_pylist()


def decode_image(cell: dict, name: str) -> Image.Image:
    """The original image as 8-bit RGB (16-bit and palette images handled as at ingest)."""
    return Image.fromarray(load_rgb(cell["bytes"], name))


def candidate_answers(release, dataset: str, split: str = "train") -> dict[str, list[str]]:
    """answer_type -> distinct training answers (by normalised form, most frequent spelling
    first-seen on ties), in order of decreasing frequency."""
    counts: dict[str, Counter] = {"open": Counter(), "closed": Counter()}
    spellings: dict[str, dict[str, Counter]] = {"open": {}, "closed": {}}
    for row in iter_rows(release, dataset, split, with_image=False):
        for qa in row["qa"]:
            key = normalize_answer(qa["answer"])
            if not key:
                continue
            counts[qa["answer_type"]][key] += 1
            spellings[qa["answer_type"]].setdefault(key, Counter())[qa["answer"].strip()] += 1
    return {t: [spellings[t][key].most_common(1)[0][0] for key, _ in counts[t].most_common()] for t in counts}


def _base(row: dict, qa: dict, method: str) -> dict:
    return {
        "dataset": row["dataset"],
        "split": row["split"],
        "image_id": row["image_id"],
        "qid": qa["qid"],
        "question": qa["question"],
        "answer": qa["answer"],
        "answer_type": qa["answer_type"],
        "question_type": list(qa["question_type"] or []),
        "tags": localization_tags(qa),
        "method": method,
    }


#: (image, questions, candidates) -> one score per (question, candidate), higher is better.
RankFn = Callable[[Image.Image, Sequence[str], Sequence[str]], "Sequence[Sequence[float]]"]
#: (image, questions) -> one generated answer per question.
GenerateFn = Callable[[Image.Image, Sequence[str]], Sequence[str]]


def rank_predictions(
    rows: Iterable[dict], candidates: dict[str, list[str]], rank: RankFn, top_k: int = 5
) -> Iterator[dict]:
    """Rank each question's candidates (by its answer_type) and predict the best one."""
    normalized = {t: {normalize_answer(a) for a in c} for t, c in candidates.items()}
    for row in rows:
        image = decode_image(row["image"], row["image_id"])
        for answer_type in ("closed", "open"):
            qas = [qa for qa in row["qa"] if qa["answer_type"] == answer_type]
            cands = candidates.get(answer_type) or []
            if not qas:
                continue
            if not cands:
                raise ValueError(
                    f"{row['dataset']}: no {answer_type} training answers to rank for {answer_type} questions"
                )
            scores = rank(image, [qa["question"] for qa in qas], cands)
            for qa, row_scores in zip(qas, scores):
                order = sorted(range(len(cands)), key=lambda k: (-float(row_scores[k]), k))
                best = order[0]
                yield {
                    **_base(row, qa, "rank"),
                    "prediction": cands[best],
                    "score": float(row_scores[best]),
                    "top_k": [{"answer": cands[k], "score": float(row_scores[k])} for k in order[:top_k]],
                    "in_candidates": normalize_answer(qa["answer"]) in normalized[answer_type],
                }


def generate_predictions(rows: Iterable[dict], generate: GenerateFn) -> Iterator[dict]:
    """Generate an answer per question; the score is not defined for free text (null)."""
    for row in rows:
        image = decode_image(row["image"], row["image_id"])
        questions = [qa["question"] for qa in row["qa"]]
        if not questions:
            continue
        for qa, text in zip(row["qa"], generate(image, questions)):
            yield {**_base(row, qa, "generate"), "prediction": text, "score": None, "top_k": [], "in_candidates": None}


def write_predictions(path: str | Path, predictions: Iterable[dict]) -> int:
    """Write predictions as JSONL, or as Parquet when ``path`` ends in ``.parquet``."""
    rows = [{k: p.get(k) for k in PREDICTION_FIELDS} for p in predictions]
    path = Path(path)
    if path.suffix == ".parquet":
        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), tmp)
    else:
        write_jsonl(path, rows)
    return len(rows)


def read_predictions(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
