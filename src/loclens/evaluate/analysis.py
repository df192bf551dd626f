"""Score one run's predictions: every metric, per dataset and pooled, for all questions and for
each localization category (the paper's Table 2 restricts the metrics to these).

``combined`` pools the questions of all datasets (a micro average: each question counts once),
so a large dataset weighs more than a small one, as in a single merged test set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .metrics import ItemScore, score_item, summarize
from .tags import LOCALIZATION_CATEGORIES

ALL = "all"
#: Either localization category (anatomical or positioning).
LOCALIZATION = "localization"
#: Question groups of every summary, in table order.
GROUPS = (ALL,) + LOCALIZATION_CATEGORIES + (LOCALIZATION,)
COMBINED = "combined"


def groups_of(tags: Iterable[str]) -> list[str]:
    tags = list(tags)
    return [ALL, *tags] + ([LOCALIZATION] if tags else [])


def _summary(items: list[tuple[ItemScore, dict]]) -> dict:
    out = summarize(score for score, _ in items)
    flags = [p["in_candidates"] for _, p in items if p.get("in_candidates") is not None]
    # For ranked answers: the share of questions whose reference was among the candidates at
    # all, an upper bound on what ranking can reach.
    out["candidate_coverage"] = sum(flags) / len(flags) if flags else None
    # Undefined means (empty subsets) become null, so the metrics file is strict JSON.
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def score_predictions(predictions: Iterable[dict]) -> dict:
    """Per-dataset and pooled summaries of prediction rows (see ``answer.PREDICTION_FIELDS``)."""
    by_scope: dict[str, dict[str, list]] = {}
    for pred in predictions:
        score = score_item(pred["prediction"], pred["answer"], pred["answer_type"])
        for scope in (pred["dataset"], COMBINED):
            groups = by_scope.setdefault(scope, {g: [] for g in GROUPS})
            for group in groups_of(pred["tags"]):
                groups[group].append((score, pred))
    datasets = {s: {g: _summary(v) for g, v in groups.items()} for s, groups in by_scope.items() if s != COMBINED}
    combined = {g: _summary(v) for g, v in by_scope.get(COMBINED, {g: [] for g in GROUPS}).items()}
    return {"datasets": dict(sorted(datasets.items())), COMBINED: combined}


def scopes(run_metrics: dict) -> dict[str, dict]:
    """Scope name -> group summaries: each dataset, then ``combined``."""
    return {**run_metrics["datasets"], COMBINED: run_metrics[COMBINED]}
