"""Evaluate one trained model (predictions + metrics), and summarise a grid of them (tables)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..atomic import write_json
from ..errors import LoclensError
from .analysis import score_predictions
from .answer import candidate_answers, generate_predictions, iter_rows, rank_predictions, write_predictions
from .grid import baseline_cell, grid_cells, main_cell
from .plots import plot_gains
from .tables import build_tables, write_tables

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PREDICTIONS_DIR = "predictions"
PLOT_FILE = "gains.png"


class GridError(LoclensError, ValueError):
    """Runs that do not make up the configured grid."""


def evaluate_model(release, datasets: list[str], settings: dict, answerer, out_dir, run: dict) -> dict:
    """Answer every ``settings['split']`` question of ``datasets`` with ``answerer`` (an object
    with ``method`` and ``rank`` or ``generate``, see ``answer``), write the predictions per dataset
    and ``metrics.json`` (``run`` identifies the cell and seed)."""
    out_dir = Path(out_dir)
    predictions = []
    files = {}
    for dataset in datasets:
        rows = iter_rows(release, dataset, settings["split"])
        if answerer.method == "rank":
            candidates = candidate_answers(release, dataset, settings["candidates_split"])
            preds = list(rank_predictions(rows, candidates, answerer.rank, settings["top_k"]))
        else:
            preds = list(generate_predictions(rows, answerer.generate))
        path = out_dir / PREDICTIONS_DIR / f"{dataset}.{settings['predictions_format']}"
        write_predictions(path, preds)
        files[dataset] = str(path.relative_to(out_dir))
        predictions.extend(preds)
        log.info("%s: %d predictions -> %s", dataset, len(preds), path)
    result = {
        **run,
        "method": answerer.method,
        "split": settings["split"],
        "predictions": files,
        "metrics": score_predictions(predictions),
    }
    write_json(out_dir / METRICS_FILE, result)
    return result


def make_tables(metrics_files: list[str | Path], evaluate_cfg: dict, out_dir) -> dict[str, str]:
    """Tables 1-3 and the gain plot from the runs of the configured grid.

    Every cell x seed of the grid must be present: a missing run is an error, not a smaller
    table (a silently missing seed would change the spread)."""
    runs = [json.loads(Path(p).read_text()) for p in metrics_files]
    cells = grid_cells(evaluate_cfg)
    expected = {(c.name, s) for c in cells for s in evaluate_cfg["seeds"]}
    found = {(r["cell"], r["seed"]) for r in runs}
    if expected - found:
        missing = ", ".join(f"{c} seed {s}" for c, s in sorted(expected - found))
        raise GridError(f"runs missing from the grid: {missing}")
    runs = [r for r in runs if (r["cell"], r["seed"]) in expected]
    cells_settings = {c.name: c.settings() for c in cells}
    tables = build_tables(runs, cells_settings, main_cell(evaluate_cfg).name, baseline_cell(evaluate_cfg).name)
    paths = write_tables(tables, out_dir)
    paths[PLOT_FILE] = str(plot_gains(tables, Path(out_dir) / PLOT_FILE))
    return paths
