"""The grid (the paper's Table 3 by default), and Tables 1-3 and the plot computed through the real
metrics from hand-made predictions of a three-cell, three-seed, two-dataset grid."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from loclens.config import validate
from loclens.evaluate.analysis import score_predictions
from loclens.evaluate.grid import PAPER_TABLE3, cell_train_settings, grid_cells, lens_views, make_cell
from loclens.evaluate.plots import plot_gains
from loclens.evaluate.run import GridError, make_tables
from loclens.evaluate.tables import TABLE_STEMS, aggregate, build_tables, write_tables
from loclens.evaluate.tags import MissingTagsError, localization_tags


def _pred(dataset, answer, prediction, answer_type="closed", tags=(), qid="q"):
    return {
        "dataset": dataset,
        "qid": qid,
        "answer": answer,
        "prediction": prediction,
        "answer_type": answer_type,
        "tags": list(tags),
    }


def test_localization_tags_come_from_the_release_field():
    assert localization_tags({"localization": ["positioning", "anatomical"]}) == ["anatomical", "positioning"]
    assert localization_tags({"localization": []}) == []
    with pytest.raises(MissingTagsError, match="predates localization tags"):
        localization_tags({"qid": "7", "question_type": ["PRES"]})


def test_score_predictions_per_dataset_category_and_pooled():
    preds = [
        _pred("a", "yes", "yes", tags=["anatomical"]),
        _pred("a", "no", "normal", tags=["anatomical"]),  # trap: wrong
        _pred("a", "left", "left", tags=["positioning"]),
        _pred("b", "liver", "liver", "open", tags=["anatomical", "positioning"]),
        _pred("b", "ct", "mri", "open"),
    ]
    m = score_predictions(preds)
    assert set(m["datasets"]) == {"a", "b"}
    a = m["datasets"]["a"]
    assert a["all"]["closed_accuracy"] == pytest.approx(2 / 3) and a["all"]["n_closed"] == 3
    assert a["anatomical"]["closed_accuracy"] == pytest.approx(1 / 2)
    assert a["positioning"]["closed_accuracy"] == 1.0
    assert a["all"]["open_recall"] is None and a["all"]["n_open"] == 0  # undefined, not 0
    assert m["datasets"]["b"]["localization"]["n_questions"] == 1
    c = m["combined"]
    assert c["all"]["n_questions"] == 5 and c["all"]["open_recall"] == pytest.approx(1 / 2)
    assert c["anatomical"]["n_questions"] == 3 and c["positioning"]["n_questions"] == 2
    assert c["localization"]["n_questions"] == 4  # the "b" liver question counts once
    json.dumps(m, allow_nan=False)  # strict JSON


def test_aggregate_mean_sample_std_and_undefined_values():
    agg = aggregate([0.5, 0.7, None, float("nan")])
    assert agg["mean"] == pytest.approx(0.6) and agg["std"] == pytest.approx(0.141421356, rel=1e-6)
    assert agg["n"] == 2
    assert aggregate([0.5])["std"] is None
    assert aggregate([])["mean"] is None


def _evaluate(evaluate: dict | None = None) -> dict:
    return validate({"datasets": {"a": {}}, "evaluate": evaluate or {}})["evaluate"]


def test_default_table3_is_the_papers_eight_rows():
    # (lens sources, phase-1 loss, pixel shuffle), in the paper's row order; "expert" is its Mask.
    paper = [
        ((), "infonce", False),  # the baseline: no lens, InfoNCE, no pixel shuffle
        (("sam",), "infonce", False),
        (("medsam",), "infonce", False),
        (("expert",), "infonce", False),
        (("sam", "medsam", "expert"), "infonce", False),
        (("sam", "medsam", "expert"), "dcl", False),
        (("sam", "medsam", "expert"), "infonce", True),
        (("sam", "medsam", "expert"), "dcl", True),  # the paper's method
    ]
    cfg = _evaluate()
    cells = grid_cells(cfg)
    assert [(c.lens, c.phase1_loss, c.pixel_shuffle) for c in cells] == paper
    assert list(PAPER_TABLE3) == cells
    # Tables 1-2 compare the last row (main) with the first (baseline), and add no cell.
    assert cfg["main"] == {"lens": ["sam", "medsam", "expert"], "phase1_loss": "dcl", "pixel_shuffle": True}
    assert cfg["baseline"] == {"phase1_loss": "infonce", "pixel_shuffle": False}
    assert cfg["seeds"] == [0, 1, 2]
    assert [c.name for c in cells][:2] == ["lens-none/p1-infonce/shuffle-off", "lens-sam/p1-infonce/shuffle-off"]


def test_grid_modes_and_cells():
    cells = grid_cells(
        _evaluate(
            {
                "grid": {
                    "mode": "cells",
                    "cells": [
                        {"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True},
                        {"lens": ["expert"], "phase1_loss": "infonce", "pixel_shuffle": False},
                    ],
                },
                "main": {"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True},
            }
        )
    )
    # The baseline (not listed) comes first; main is listed, so it keeps its place.
    assert [c.name for c in cells] == [
        "lens-none/p1-infonce/shuffle-off",
        "lens-medsam/p1-dcl/shuffle-on",
        "lens-expert/p1-infonce/shuffle-off",
    ]
    with pytest.raises(ValueError, match="grid.cells is empty"):
        grid_cells(_evaluate({"grid": {"mode": "cells"}}))
    one = grid_cells(_evaluate({"grid": {"mode": "one_at_a_time"}}))
    # baseline + main + 3 other lens values + the other loss + shuffle off.
    assert len(one) == 7 and one[1].name == "lens-sam+medsam+expert/p1-dcl/shuffle-on"
    product = grid_cells(_evaluate({"grid": {"mode": "product"}}))
    assert len(product) == 4 * 2 * 2 + 1  # every combination, plus the baseline
    assert make_cell("medsam+sam", "infonce", "off").name == "lens-sam+medsam/p1-infonce/shuffle-off"
    with pytest.raises(ValueError, match="unknown lens source"):
        make_cell("sam+ct", "dcl", "on")
    assert lens_views(("sam", "expert")) == ["sam_unicolor", "sam_multicolor", "masked"]
    assert lens_views(()) == []


def test_cell_train_settings_override_only_the_ablated_keys():
    align = {
        "seed": 0,
        "views": ["masked"],
        "connector": {"pixel_shuffle": True, "factor": 4},
        "align": {"loss": "dcl", "epochs": 2},
    }
    got = cell_train_settings(align, make_cell("medsam", "infonce", "off"), 3)
    assert got == {
        "seed": 3,
        "views": ["medsam_unicolor", "medsam_multicolor"],
        "connector": {"pixel_shuffle": False, "factor": 4},
        "align": {"loss": "infonce", "epochs": 2},
    }
    vqa = cell_train_settings(
        {"seed": 0, "vqa": {"loss": "infonce"}, "connector": {"factor": 4}}, make_cell("medsam", "dcl", "on"), 1
    )
    assert "align" not in vqa and vqa["vqa"] == {"loss": "infonce"}  # phase 2 keeps its own loss


# Hand-made test set: (dataset, reference, answer type, localization tags).
QUESTIONS = [
    ("a", "yes", "closed", ["anatomical"]),
    ("a", "no", "closed", ["positioning"]),
    ("a", "left kidney", "open", ["anatomical"]),
    ("a", "ct", "open", []),
    ("b", "yes", "closed", []),
    ("b", "liver", "open", ["anatomical", "positioning"]),
]
BASE, MAIN, MASK = (
    "lens-none/p1-infonce/shuffle-off",
    "lens-sam+medsam+expert/p1-dcl/shuffle-on",
    "lens-expert/p1-infonce/shuffle-off",
)
ALL_RIGHT = [q[1] for q in QUESTIONS]
# Predictions per (cell, seed), one per question above. Traps: "normal" is not "no"; "yes, no"
# answers both polarities (wrong); "kidney" finds half of "left kidney".
PREDICTIONS = {
    (BASE, 0): ["yes", "normal", "kidney", "mri", "no", "liver"],
    (BASE, 1): ["no", "no", "", "ct", "yes", "lung"],
    (BASE, 2): ALL_RIGHT,
    (MAIN, 0): ALL_RIGHT,
    (MAIN, 1): ["yes", "no", "kidney", "ct", "yes", "liver"],
    (MAIN, 2): ["yes, no", "no", "left kidney", "ct", "yes", "liver"],
    **{(MASK, s): ALL_RIGHT for s in range(3)},
}


def _runs() -> list[dict]:
    runs = []
    for (cell, seed), answers in PREDICTIONS.items():
        preds = [
            _pred(d, ref, p, kind, tags, qid=f"q{i}")
            for i, ((d, ref, kind, tags), p) in enumerate(zip(QUESTIONS, answers))
        ]
        runs.append({"cell": cell, "seed": seed, "metrics": score_predictions(preds)})
    return runs


def _cells_cfg() -> dict:
    return _evaluate(
        {
            "grid": {
                "mode": "cells",
                "cells": [
                    {"lens": [], "phase1_loss": "infonce", "pixel_shuffle": False},
                    {"lens": ["sam", "medsam", "expert"], "phase1_loss": "dcl", "pixel_shuffle": True},
                    {"lens": ["expert"], "phase1_loss": "infonce", "pixel_shuffle": False},
                ],
            }
        }
    )


def _tables(tmp_path):
    paths = []
    for i, run in enumerate(_runs()):
        path = tmp_path / "runs" / f"{i}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(run))
        paths.append(path)
    out = tmp_path / "tables"
    make_tables(paths, _cells_cfg(), out)
    return out, json.loads((out / "tables.json").read_text())


def _csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_table1_per_dataset_open_closed_with_without_lens_and_gain(tmp_path):
    out, tables = _tables(tmp_path)
    assert tables["main"] == {"cell": MAIN, "baseline": BASE} and tables["seeds"] == [0, 1, 2]
    assert tables["order"] == [BASE, MAIN, MASK]
    md = (out / "table1_main.md").read_text()
    assert "| model | a Open | a Closed | b Open | b Closed |" in md
    # a, open recall: without 0.25, 0.5, 1 -> 58.3 ± 38.2; with 1, 0.75, 1; gain 0.75, 0.25, 0.
    # a, closed: without 0.5, 0.5, 1; with 1, 1, 0.5; gain 0.5, 0.5, -0.5. b: one question each.
    assert f"| without lens (`{BASE}`) | 58.3 ± 38.2 | 66.7 ± 28.9 | 66.7 ± 57.7 | 66.7 ± 57.7 |" in md
    assert f"| with lens (`{MAIN}`) | 91.7 ± 14.4 | 83.3 ± 28.9 | 100.0 ± 0.0 | 100.0 ± 0.0 |" in md
    assert "| gain | +33.3 ± 38.2 | +16.7 ± 57.7 | +33.3 ± 57.7 | +33.3 ± 57.7 |" in md
    assert "Test questions per dataset: a: 4, b: 2." in md and "Fewer than" not in md
    rows = _csv(out / "table1_main.csv")
    assert [r["model"] for r in rows] == [f"without lens (`{BASE}`)", f"with lens (`{MAIN}`)", "gain"]
    assert float(rows[2]["a Closed mean"]) == pytest.approx(100 / 6, abs=1e-3)
    assert float(rows[2]["a Closed std"]) == pytest.approx(100 / 3**0.5, abs=1e-3)
    assert rows[2]["a Closed n"] == "3"
    layout = tables["layouts"]["table1_main"]
    assert layout["rows"][2][2]["mean"] == pytest.approx(1 / 6)


def test_table2_localization_gain_on_the_combined_datasets(tmp_path):
    out, tables = _tables(tmp_path)
    md = (out / "table2_localization.md").read_text()
    assert (
        "| questions | q | Open without lens | Open with lens | Open gain | Closed without lens | Closed with lens | Closed gain |"
        in md
    )
    # anatomical: open = "left kidney" (a) and "liver" (b); closed = the "yes" of a.
    assert (
        "| anatomical | 3 | 58.3 ± 52.0 | 91.7 ± 14.4 | +33.3 ± 38.2 | 66.7 ± 57.7 | 66.7 ± 57.7 | +0.0 ± 100.0 |" in md
    )
    # positioning: open = "liver" (b, tagged both); closed = the "no" of a.
    assert (
        "| positioning | 2 | 66.7 ± 57.7 | 100.0 ± 0.0 | +33.3 ± 57.7 | 66.7 ± 57.7 | 100.0 ± 0.0 | +33.3 ± 57.7 |"
        in md
    )
    assert "| localization | 4 |" in md and "| all | 6 |" in md
    pos = tables["localization"][0]["scopes"]["combined"]["positioning"]["closed_accuracy"]
    assert pos["gain"]["values"] == [1.0, 0.0, 0.0] and pos["wins"] == 1
    rows = {r["questions"]: r for r in _csv(out / "table2_localization.csv")}
    assert list(rows) == ["anatomical", "positioning", "localization", "all"]
    assert float(rows["anatomical"]["Closed gain std"]) == pytest.approx(100.0)


def test_table3_rows_in_grid_order_with_overall_and_localization(tmp_path):
    out, _ = _tables(tmp_path)
    md = (out / "table3_ablation.md").read_text()
    assert (
        "| SAM | MedSAM | Mask | phase-1 loss | pixel shuffle | seeds | Overall Open | Overall Closed"
        " | Localization Open | Localization Closed |"
    ) in md
    lines = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines == [
        # Overall closed: 1/3, 2/3, 1; localization closed: 1/2, 1/2, 1; open as Table 2.
        "|  |  |  | InfoNCE | off | 3 | 61.1 ± 34.7 | 66.7 ± 33.3 | 58.3 ± 52.0 | 66.7 ± 28.9 |",
        "| ✓ | ✓ | ✓ | DCL | on | 3 | 94.4 ± 9.6 | 88.9 ± 19.2 | 91.7 ± 14.4 | 83.3 ± 28.9 |",
        "|  |  | ✓ | InfoNCE | off | 3 | 100.0 ± 0.0 | 100.0 ± 0.0 | 100.0 ± 0.0 | 100.0 ± 0.0 |",
    ]
    rows = _csv(out / "table3_ablation.csv")
    assert [(r["SAM"], r["Mask"], r["phase-1 loss"]) for r in rows] == [
        ("", "", "InfoNCE"),
        ("✓", "✓", "DCL"),
        ("", "✓", "InfoNCE"),
    ]
    assert float(rows[1]["Overall Closed mean"]) == pytest.approx(800 / 9, abs=1e-3)
    assert (out / "tables.md").read_text().count("## Table") == 3


def test_tables_need_every_run_and_flag_fewer_than_three_seeds(tmp_path):
    runs = [r for r in _runs() if not (r["cell"] == MASK and r["seed"] == 2)]
    paths = []
    for i, run in enumerate(runs):
        (tmp_path / f"{i}.json").write_text(json.dumps(run))
        paths.append(tmp_path / f"{i}.json")
    with pytest.raises(GridError, match="lens-expert/p1-infonce/shuffle-off seed 2"):
        make_tables(paths, _cells_cfg(), tmp_path / "out")
    two = {**_cells_cfg(), "seeds": [0, 1]}
    make_tables(paths, two, tmp_path / "two")
    md = (tmp_path / "two" / "table1_main.md").read_text()
    assert "over 2 seeds ([0, 1])" in md and "Fewer than 3 seeds" in md


def test_gain_plot_is_a_png(tmp_path):
    runs = _runs()
    settings = {
        c.name: c.settings() for c in (make_cell("none", "infonce", "off"), make_cell("sam+medsam+expert", "dcl", "on"))
    }
    tables = build_tables(runs, settings, MAIN, BASE)
    png = plot_gains(tables, tmp_path / "gains.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 300
    paths = write_tables(tables, tmp_path / "t")
    assert sorted(paths) == sorted(f"{stem}.{ext}" for stem in TABLE_STEMS for ext in ("md", "csv")) + [
        "tables.json",
        "tables.md",
    ]
