"""The paper's three tables from a grid of runs, with mean and spread over seeds.

- Table 1 (``main``): per dataset, open-question recall and closed-question accuracy of the model
  without lens (``evaluate.baseline``) and with it (``evaluate.main``), and the gain.
- Table 2 (``localization``): on the combined datasets, the same two models and the gain on the
  anatomical and positioning questions (and either, and all questions).
- Table 3 (``ablation``): every cell of the grid, one row each (lens sources SAM / MedSAM / Mask,
  phase-1 loss, pixel shuffle), with Overall and Localization columns on the combined datasets.

Gains are paired by seed (lens seed s minus baseline seed s: both share initialisation and data
order), so the spread is that of the gain itself. Spread is the sample standard deviation over
seeds (ddof = 1; undefined for one seed). A value that is undefined for a seed (an empty question
subset) is left out of that cell's mean and the remaining count is reported, so "n" always says
how many seeds a figure rests on.

Each table is written as Markdown (percent, ``mean ± std``), as CSV (the same rows, with mean,
std and n in their own columns) and inside ``tables.json`` (every metric, every value per seed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from ..atomic import write_json, write_text
from .analysis import ALL, COMBINED, LOCALIZATION, scopes
from .grid import LENS_LABELS, LENS_SOURCES, NO_LENS
from .metrics import SUMMARY_METRICS
from .tags import LOCALIZATION_CATEGORIES

METRICS = tuple(SUMMARY_METRICS)
#: The paper's two columns per dataset, in its order: open-question recall, closed accuracy.
HEADLINE = ("open_recall", "closed_accuracy")
LABELS = {
    "closed_accuracy": "closed acc.",
    "open_recall": "open recall",
    "yes_no_accuracy": "yes/no acc.",
    "exact_match": "exact match",
}
SHORT = {"open_recall": "Open", "closed_accuracy": "Closed"}
#: Question groups of Table 2, in row order.
TABLE2_GROUPS = LOCALIZATION_CATEGORIES + (LOCALIZATION, ALL)
#: File stem of each table (``<stem>.md``, ``<stem>.csv``), in table order.
TABLE_STEMS = ("table1_main", "table2_localization", "table3_ablation")
#: Fewer seeds than this and the README's protocol is not met; the tables say so.
MIN_SEEDS = 3


def defined(value) -> TypeGuard[float]:
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
    for _seed, run in sorted(seeds.items()):
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


def paired_gain(runs: list[dict], cell: str, baseline: str) -> dict:
    """scope -> group -> metric -> {baseline, lens, gain (paired by seed), wins}."""
    lens, base = _by_seed(runs, cell), _by_seed(runs, baseline)
    paired = sorted(set(lens) & set(base))
    out: dict = {}
    for scope, groups in scopes(lens[paired[0]]["metrics"]).items() if paired else []:
        for group in groups:
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
            out[scope][group]["n_questions"] = groups[group]["n_questions"]
    return {"cell": cell, "baseline": baseline, "seeds": paired, "scopes": out}


# -- layouts: one row list per table, shared by the Markdown and CSV writers ------------------


@dataclass(frozen=True)
class Num:
    """A figure in a table: an aggregate over seeds (fractions), shown in percent."""

    agg: dict
    signed: bool = False


@dataclass
class Layout:
    key: str
    title: str
    note: str
    header: list[str]
    rows: list[list] = field(default_factory=list)  # str or Num per column


def fmt(agg: dict | None, signed: bool = False) -> str:
    """Percent with one decimal, '± std' when defined; an en dash when undefined."""
    if not agg or agg["mean"] is None:
        return "–"
    sign = "+" if signed else ""
    text = f"{100 * agg['mean']:{sign}.1f}"
    if agg["std"] is not None:
        text += f" ± {100 * agg['std']:.1f}"
    return text


def _seeds_note(tables: dict) -> str:
    seeds = tables["seeds"]
    n = len(seeds)
    text = f"Percent, mean ± sample std over {n} seed{'s' if n != 1 else ''} ({seeds})."
    if n < MIN_SEEDS:
        text += f" Fewer than {MIN_SEEDS} seeds: the spread is not a reliable estimate."
    return text


def _dataset_scopes(gain_scopes: dict) -> list[str]:
    return [s for s in gain_scopes if s != COMBINED]


def table1_layout(tables: dict) -> Layout:
    """Per dataset: Open / Closed without lens, with lens, and the gain (the paper's Table 1)."""
    pair = tables["main"]
    entry = tables["localization"][0] if tables["localization"] else {"scopes": {}}
    datasets = _dataset_scopes(entry["scopes"])
    header = ["model"]
    for d in datasets:
        header += [f"{d} {SHORT[m]}" for m in HEADLINE]
    rows = []
    for label, part, signed in (
        (f"without lens (`{pair['baseline']}`)", "baseline", False),
        (f"with lens (`{pair['cell']}`)", "lens", False),
        ("gain", "gain", True),
    ):
        row: list = [label]
        for d in datasets:
            row += [Num(entry["scopes"][d][ALL][m][part], signed) for m in HEADLINE]
        rows.append(row)
    counts = ", ".join(f"{d}: {entry['scopes'][d][ALL]['n_questions']}" for d in datasets)
    note = (
        f"{_seeds_note(tables)} Open = open-question recall, Closed = closed-question accuracy "
        f"(`evaluate/metrics.py`); answered from the original image only. Gain = with - "
        f"without lens, paired by seed. Test questions per dataset: {counts}."
    )
    return Layout(TABLE_STEMS[0], "Table 1: with and without the localization lens", note, header, rows)


def table2_layout(tables: dict) -> Layout:
    """Anatomical / positioning questions of the combined datasets: without, with, gain."""
    entry = tables["localization"][0] if tables["localization"] else None
    header = ["questions", "q"]
    for m in HEADLINE:
        header += [f"{SHORT[m]} without lens", f"{SHORT[m]} with lens", f"{SHORT[m]} gain"]
    rows = []
    if entry is not None:
        combined = entry["scopes"][COMBINED]
        for group in TABLE2_GROUPS:
            g = combined[group]
            row: list = [group, str(g["n_questions"])]
            for m in HEADLINE:
                row += [Num(g[m]["baseline"]), Num(g[m]["lens"]), Num(g[m]["gain"], signed=True)]
            rows.append(row)
    note = (
        f"{_seeds_note(tables)} All datasets pooled (each question counts once). "
        f"`localization` = anatomical or positioning; q = questions. Without lens: "
        f"`{tables['main']['baseline']}`; with lens: `{tables['main']['cell']}`."
    )
    return Layout(TABLE_STEMS[1], "Table 2: localization questions (combined datasets)", note, header, rows)


def table3_layout(tables: dict) -> Layout:
    """One row per cell, in grid order: lens sources, phase-1 loss, pixel shuffle, seeds, then
    Overall and Localization (Open, Closed) on the combined datasets."""
    header = [LENS_LABELS[s] for s in LENS_SOURCES] + ["phase-1 loss", "pixel shuffle", "seeds"]
    for part in ("Overall", "Localization"):
        header += [f"{part} {SHORT[m]}" for m in HEADLINE]
    rows = []
    for name in tables["order"]:
        cell = tables["cells"][name]
        s = cell["settings"]
        lens = set() if s["lens"] == NO_LENS else set(s["lens"].split("+"))
        row: list = ["✓" if src in lens else "" for src in LENS_SOURCES]
        row += ["DCL" if s["phase1_loss"] == "dcl" else "InfoNCE", s["pixel_shuffle"], str(len(cell["seeds"]))]
        combined = cell["scopes"].get(COMBINED, {})
        for group in (ALL, LOCALIZATION):
            row += [Num(combined[group][m]) if group in combined else Num({}) for m in HEADLINE]
        rows.append(row)
    note = (
        f"{_seeds_note(tables)} All datasets pooled. Overall = all test questions; Localization = "
        "anatomical or positioning questions. Mask = the expert-mask (masked) view."
    )
    return Layout(
        TABLE_STEMS[2], "Table 3: ablation of lens source, phase-1 loss and pixel shuffle", note, header, rows
    )


def layouts(tables: dict) -> list[Layout]:
    return [table1_layout(tables), table2_layout(tables), table3_layout(tables)]


def to_markdown(layout: Layout) -> str:
    def cell(v) -> str:
        return fmt(v.agg, v.signed) if isinstance(v, Num) else str(v)

    lines = ["| " + " | ".join(layout.header) + " |", "|" + "|".join("---" for _ in layout.header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in layout.rows]
    return f"## {layout.title}\n\n{layout.note}\n\n" + "\n".join(lines) + "\n"


def _numeric_columns(layout: Layout) -> set[int]:
    return {i for row in layout.rows for i, v in enumerate(row) if isinstance(v, Num)}


def to_csv(layout: Layout) -> str:
    """The Markdown rows with each figure split into '<column> mean', 'std' and 'n' (percent)."""
    numeric = _numeric_columns(layout)
    header = []
    for i, name in enumerate(layout.header):
        header += [f"{name} mean", f"{name} std", f"{name} n"] if i in numeric else [name]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in layout.rows:
        out = []
        for v in row:
            if isinstance(v, Num):
                mean, std = v.agg.get("mean"), v.agg.get("std")
                out += [
                    "" if mean is None else f"{100 * mean:.4f}",
                    "" if std is None else f"{100 * std:.4f}",
                    v.agg.get("n", 0),
                ]
            else:
                out.append(v)
        writer.writerow(out)
    return buf.getvalue()


def to_json(layout: Layout) -> dict:
    def cell(v):
        return {k: v.agg.get(k) for k in ("mean", "std", "n")} if isinstance(v, Num) else v

    return {"title": layout.title, "header": layout.header, "rows": [[cell(v) for v in row] for row in layout.rows]}


def build_tables(runs: list[dict], cells: dict[str, dict], main: str, baseline: str) -> dict:
    """All three tables as one JSON-able object.

    ``runs``: {"cell", "seed", "metrics" (analysis.score_predictions)} per trained model;
    ``cells``: cell name -> its settings, in Table 3 order; ``main`` / ``baseline``: the lens
    model and the model without lens of Tables 1 and 2.
    """
    summaries = {name: cell_summary(runs, name) for name in cells}
    tables = {
        "metrics": list(METRICS),
        "seeds": sorted({r["seed"] for r in runs}),
        "main": {"cell": main, "baseline": baseline},
        # Table 3's row order (JSON objects are written with sorted keys).
        "order": list(cells),
        "cells": {
            name: {"settings": cells[name], "seeds": sorted(_by_seed(runs, name)), "scopes": summaries[name]}
            for name in cells
        },
        "localization": [paired_gain(runs, main, baseline)],
    }
    tables["layouts"] = {layout.key: to_json(layout) for layout in layouts(tables)}
    return tables


def write_tables(tables: dict, out_dir) -> dict[str, str]:
    """Write tables.json, and per table a Markdown and a CSV file (plus all three in tables.md)."""
    out_dir = Path(out_dir)
    paths = {}
    parts = []
    for layout in layouts(tables):
        md = to_markdown(layout)
        parts.append(md)
        for suffix, text in ((".md", md), (".csv", to_csv(layout))):
            name = layout.key + suffix
            write_text(out_dir / name, text)
            paths[name] = str(out_dir / name)
    write_text(out_dir / "tables.md", "\n".join(parts))
    write_json(out_dir / "tables.json", json.loads(json.dumps(tables)))
    paths.update({name: str(out_dir / name) for name in ("tables.md", "tables.json")})
    return paths
