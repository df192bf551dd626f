"""The paper's three tables from a grid of runs, with mean and spread over seeds.

- Table 1 (``main``): every metric per dataset for the lens-trained model and its baseline.
- Table 2 (``localization``): the metrics restricted to the anatomical and positioning questions,
  per dataset and combined, for each lens-trained cell, its baseline (the same cell trained on
  original images only) and the gain. Gains are paired by seed (lens seed s minus baseline seed
  s: both share initialisation and data order), so the spread is that of the gain itself.
- Table 3 (``ablation``): closed accuracy and open recall of every cell of the grid.

Spread is the sample standard deviation over seeds (ddof = 1; undefined for one seed). A value
that is undefined for a seed (an empty question subset) is left out of that cell's mean and the
remaining count is reported, so "n" always says how many seeds a figure rests on.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable

from ..atomic import write_json, write_text
from .analysis import ALL, COMBINED, GROUPS, LOCALIZATION, scopes
from .metrics import SUMMARY_METRICS
from .tags import LOCALIZATION_CATEGORIES

METRICS = tuple(SUMMARY_METRICS)
#: Metrics shown in the compact tables (2 and 3); the JSON always holds all of them.
HEADLINE = ("closed_accuracy", "open_recall")
LABELS = {
    "closed_accuracy": "closed acc.",
    "open_recall": "open recall",
    "yes_no_accuracy": "yes/no acc.",
    "exact_match": "exact match",
}


def defined(value) -> bool:
    """A metric value that exists: metrics of an empty subset are null (JSON) or NaN."""
    return value is not None and not math.isnan(value)


def aggregate(values: Iterable[float | None]) -> dict:
    """Mean, sample std, count and the values themselves (undefined values left out)."""
    kept = [float(v) for v in values if defined(v)]
    return {
        "mean": statistics.fmean(kept) if kept else None,
        "std": statistics.stdev(kept) if len(kept) > 1 else None,
        "n": len(kept),
        "values": kept,
    }


def _by_seed(runs: list[dict], cell: str) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["cell"] == cell}


def cell_summary(runs: list[dict], cell: str) -> dict:
    """scope -> group -> metric -> aggregate over the cell's seeds, plus question counts."""
    seeds = _by_seed(runs, cell)
    out: dict = {}
    for seed, run in sorted(seeds.items()):
        for scope, groups in scopes(run["metrics"]).items():
            for group, summary in groups.items():
                slot = out.setdefault(scope, {}).setdefault(group, {m: [] for m in METRICS})
                for metric in METRICS:
                    slot[metric].append(summary[metric])
                slot["n_questions"] = summary["n_questions"]
    for groups in out.values():
        for slot in groups.values():
            for metric in METRICS:
                slot[metric] = aggregate(slot[metric])
    return out


def localization_gain(runs: list[dict], cell: str, baseline: str) -> dict:
    """scope -> group -> metric -> {baseline, lens, gain (paired by seed), wins}."""
    lens, base = _by_seed(runs, cell), _by_seed(runs, baseline)
    paired = sorted(set(lens) & set(base))
    out: dict = {}
    for scope in scopes(lens[paired[0]]["metrics"]) if paired else []:
        for group in GROUPS:
            for metric in METRICS:
                b = [scopes(base[s]["metrics"])[scope][group][metric] for s in paired]
                l_ = [scopes(lens[s]["metrics"])[scope][group][metric] for s in paired]
                gains = [y - x if defined(x) and defined(y) else None for x, y in zip(b, l_)]
                out.setdefault(scope, {}).setdefault(group, {})[metric] = {
                    "baseline": aggregate(b),
                    "lens": aggregate(l_),
                    "gain": aggregate(gains),
                    # Seeds on which the lens model beat its baseline.
                    "wins": sum(1 for g in gains if defined(g) and g > 0),
                }
            out[scope][group]["n_questions"] = scopes(lens[paired[0]]["metrics"])[scope][group]["n_questions"]
    return {"cell": cell, "baseline": baseline, "seeds": paired, "scopes": out}


def build_tables(runs: list[dict], cells: dict[str, dict], main: str, baselines: dict[str, str]) -> dict:
    """All three tables as one JSON-able object.

    ``runs``: {"cell", "seed", "metrics" (analysis.score_predictions)} per trained model;
    ``cells``: cell name -> its settings; ``main``: the lens-trained cell of Table 1;
    ``baselines``: lens cell -> its original-images-only baseline cell.
    """
    summaries = {name: cell_summary(runs, name) for name in cells}
    gains = [localization_gain(runs, cell, base) for cell, base in baselines.items()]
    return {
        "metrics": list(METRICS),
        "seeds": sorted({r["seed"] for r in runs}),
        "main": {"cell": main, "baseline": baselines.get(main)},
        "cells": {name: {"settings": cells[name], "seeds": sorted(_by_seed(runs, name)), "scopes": summaries[name]} for name in cells},
        "localization": gains,
    }


#: Question groups of Table 2, in row order.
TABLE2_GROUPS = LOCALIZATION_CATEGORIES + (LOCALIZATION, ALL)


def shown_scopes(names) -> list[str]:
    """Scopes for the markdown tables: ``combined`` only when it differs from a single dataset."""
    names = list(names)
    return names if len(names) > 2 else [n for n in names if n != COMBINED]


def fmt(agg: dict | None, signed: bool = False) -> str:
    """Percent with one decimal, '± std' when defined; an en dash when undefined."""
    if not agg or agg["mean"] is None:
        return "–"
    sign = "+" if signed else ""
    text = f"{100 * agg['mean']:{sign}.1f}"
    if agg["std"] is not None:
        text += f" ± {100 * agg['std']:.1f}"
    return text


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _note(tables: dict) -> str:
    n = len(tables["seeds"])
    return f"Percent, mean ± sample std over seeds ({n} seed{'s' if n != 1 else ''}: {tables['seeds']}); q = questions."


def main_markdown(tables: dict) -> str:
    main, base = tables["main"]["cell"], tables["main"]["baseline"]
    header = ["model", "dataset", "q"] + [LABELS[m] for m in METRICS]
    rows = []
    for label, cell in (("baseline (original images)", base), ("lens", main)):
        if cell is None:
            continue
        cell_scopes = tables["cells"][cell]["scopes"]
        for scope in shown_scopes(cell_scopes):
            g = cell_scopes[scope][ALL]
            rows.append([f"{label}: `{cell}`", scope, str(g["n_questions"])] + [fmt(g[m]) for m in METRICS])
    return f"## Table 1: main results\n\n{_note(tables)}\n\n" + _table(header, rows) + "\n"


def localization_markdown(tables: dict) -> str:
    header = ["lens cell", "dataset", "questions", "q"]
    for m in HEADLINE:
        header += [f"{LABELS[m]} baseline", f"{LABELS[m]} lens", f"{LABELS[m]} gain"]
    rows = []
    for entry in tables["localization"]:
        for scope in shown_scopes(entry["scopes"]):
            for group in TABLE2_GROUPS:
                g = entry["scopes"][scope][group]
                row = [f"`{entry['cell']}`", scope, group, str(g["n_questions"])]
                for m in HEADLINE:
                    row += [fmt(g[m]["baseline"]), fmt(g[m]["lens"]), fmt(g[m]["gain"], signed=True)]
                rows.append(row)
    text = (
        "## Table 2: localization questions\n\n"
        f"{_note(tables)} Gain = lens - baseline, paired by seed; the baseline is the same cell "
        "trained on original images only. `localization` = anatomical or positioning.\n\n"
    )
    return text + _table(header, rows) + "\n"


def ablation_markdown(tables: dict) -> str:
    cells = tables["cells"]
    scope_names = shown_scopes(next(iter(cells.values()))["scopes"]) if cells else []
    header = ["lens sources", "phase-1 loss", "pixel shuffle", "seeds"]
    for scope in scope_names:
        header += [f"{scope} {LABELS[m]}" for m in HEADLINE]
    rows = []
    for name, cell in cells.items():
        s = cell["settings"]
        row = [s["lens"], s["phase1_loss"], s["pixel_shuffle"], str(len(cell["seeds"]))]
        for scope in scope_names:
            row += [fmt(cell["scopes"][scope][ALL][m]) for m in HEADLINE]
        rows.append(row)
    return f"## Table 3: ablations\n\n{_note(tables)}\n\n" + _table(header, rows) + "\n"


def write_tables(tables: dict, out_dir) -> dict[str, str]:
    """Write tables.json and one markdown file per table (plus all three in tables.md)."""
    from pathlib import Path

    out_dir = Path(out_dir)
    parts = {
        "table1_main.md": main_markdown(tables),
        "table2_localization.md": localization_markdown(tables),
        "table3_ablation.md": ablation_markdown(tables),
    }
    for name, text in parts.items():
        write_text(out_dir / name, text)
    write_text(out_dir / "tables.md", "\n".join(parts.values()))
    write_json(out_dir / "tables.json", json.loads(json.dumps(tables)))
    return {name: str(out_dir / name) for name in [*parts, "tables.md", "tables.json"]}
