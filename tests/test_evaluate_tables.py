"""Localization analysis, tables and plot on hand-made predictions of a two-cell, two-seed grid."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from loclens.config import validate
from loclens.evaluate.analysis import score_predictions
from loclens.evaluate.grid import baselines, cell_train_settings, grid_cells, lens_views, make_cell
from loclens.evaluate.plots import plot_gains
from loclens.evaluate.tables import aggregate, build_tables, write_tables
from loclens.evaluate.tags import MissingTagsError, localization_tags


def _pred(dataset, answer, prediction, answer_type="closed", tags=(), qid="q"):
    return {"dataset": dataset, "qid": qid, "answer": answer, "prediction": prediction,
            "answer_type": answer_type, "tags": list(tags)}


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


def _grid():
    cfg = validate({"datasets": {"a": {}}, "evaluate": {
        "seeds": [0, 1],
        "main": {"lens": ["medsam"], "phase1_loss": "dcl", "pixel_shuffle": True},
        "grid": {"lens": [["medsam"]], "phase1_loss": ["dcl"], "pixel_shuffle": [True]},
    }})["evaluate"]
    return cfg, grid_cells(cfg)


def test_grid_cells_and_baselines():
    cfg, cells = _grid()
    assert [c.name for c in cells] == ["lens-medsam/p1-dcl/shuffle-on", "lens-none/p1-dcl/shuffle-on"]
    assert baselines(cells) == {cells[0]: cells[1]}
    full = grid_cells(validate({"datasets": {"a": {}}})["evaluate"])
    assert len(full) == 9 and full[0].name == "lens-sam+medsam+expert/p1-dcl/shuffle-on"
    product = grid_cells(validate({"datasets": {"a": {}}, "evaluate": {"grid": {"mode": "product"}}})["evaluate"])
    assert len(product) == 4 * 2 * 2 + 4  # every combination, plus a baseline per (loss, shuffle)
    assert make_cell("medsam+sam", "infonce", "off").name == "lens-sam+medsam/p1-infonce/shuffle-off"
    with pytest.raises(ValueError, match="unknown lens source"):
        make_cell("sam+ct", "dcl", "on")
    assert lens_views(("sam", "expert")) == ["sam_unicolor", "sam_multicolor", "masked"]
    assert lens_views(()) == []
    align = {"seed": 0, "views": ["masked"], "connector": {"pixel_shuffle": True, "factor": 4}, "align": {"loss": "dcl", "epochs": 2}}
    got = cell_train_settings(align, make_cell("medsam", "infonce", "off"), 3)
    assert got == {"seed": 3, "views": ["medsam_unicolor", "medsam_multicolor"],
                   "connector": {"pixel_shuffle": False, "factor": 4}, "align": {"loss": "infonce", "epochs": 2}}
    vqa = cell_train_settings({"seed": 0, "vqa": {"loss": "infonce"}, "connector": {"factor": 4}}, cells[0], 1)
    assert "align" not in vqa and vqa["vqa"] == {"loss": "infonce"}  # phase 2 keeps its own loss


def _runs(cells):
    lens, base = cells
    # Hand-made: dataset "a", 4 closed questions (2 anatomical, 1 positioning, 1 untagged),
    # 2 open. Lens seed 0: 3/4 closed; seed 1: 4/4. Baseline: 2/4 and 2/4.
    refs = [("yes", "anatomical"), ("no", "anatomical"), ("left", "positioning"), ("yes", None)]
    answers = {
        (lens.name, 0): ["yes", "no", "right", "yes"],
        (lens.name, 1): ["yes", "no", "left", "yes"],
        (base.name, 0): ["yes", "normal", "right", "yes"],
        (base.name, 1): ["no", "no", "right", "yes"],
    }
    opens = {(lens.name, 0): "left kidney", (lens.name, 1): "kidney", (base.name, 0): "", (base.name, 1): "kidney"}
    runs = []
    for (cell, seed), preds in answers.items():
        rows = [_pred("a", r, p, tags=[t] if t else []) for (r, t), p in zip(refs, preds)]
        rows.append(_pred("a", "left kidney", opens[(cell, seed)], "open", tags=["anatomical"]))
        runs.append({"cell": cell, "seed": seed, "metrics": score_predictions(rows)})
    return runs


def test_tables_gain_is_paired_by_seed_and_written_as_markdown_json_and_plot(tmp_path):
    cfg, cells = _grid()
    runs = _runs(cells)
    tables = build_tables(runs, {c.name: c.settings() for c in cells}, cells[0].name,
                          {a.name: b.name for a, b in baselines(cells).items()})
    lens_all = tables["cells"][cells[0].name]["scopes"]["a"]["all"]["closed_accuracy"]
    assert lens_all["mean"] == pytest.approx(0.875) and lens_all["n"] == 2
    (entry,) = tables["localization"]
    anat = entry["scopes"]["a"]["anatomical"]["closed_accuracy"]
    # Lens: 2/2, 2/2; baseline: 1/2, 1/2 -> gain +0.5 on both seeds.
    assert anat["lens"]["mean"] == 1.0 and anat["baseline"]["mean"] == 0.5
    assert anat["gain"]["values"] == [0.5, 0.5] and anat["gain"]["std"] == 0.0 and anat["wins"] == 2
    pos = entry["scopes"]["combined"]["positioning"]["closed_accuracy"]
    assert pos["gain"]["values"] == [0.0, 1.0] and pos["wins"] == 1
    recall = entry["scopes"]["a"]["anatomical"]["open_recall"]
    assert recall["gain"]["values"] == [pytest.approx(1.0), pytest.approx(0.0)]
    assert entry["scopes"]["a"]["positioning"]["open_recall"]["gain"]["mean"] is None  # no open positioning question

    paths = write_tables(tables, tmp_path)
    md = (tmp_path / "table2_localization.md").read_text()
    assert "| `lens-medsam/p1-dcl/shuffle-on` | a | anatomical | 3 | 50.0 ± 0.0 | 100.0 ± 0.0 | +50.0 ± 0.0 |" in md
    ablation = (tmp_path / "table3_ablation.md").read_text()
    assert "| medsam | dcl | on | 2 | 87.5 ± 17.7 |" in ablation and "| none | dcl | on | 2 | 50.0 ± 0.0 |" in ablation
    assert "Table 1" in (tmp_path / "table1_main.md").read_text()
    assert json.loads((tmp_path / "tables.json").read_text()) == json.loads(json.dumps(tables))
    assert set(paths) >= {"tables.json", "tables.md"}

    png = plot_gains(tables, tmp_path / "gains.png")
    with Image.open(png) as img:
        assert img.format == "PNG" and img.width > 300
