"""The ablation grid (the paper's Table 3): which models to train and compare.

A *cell* fixes the three ablated settings; each cell is trained once per seed:

- ``lens``: the lens sources whose views phase 1 may draw (``sam``, ``medsam``, ``expert``), or
  ``none``: original images only, the baseline of the localization analysis;
- ``phase1_loss``: ``dcl`` (the paper) or ``infonce``;
- ``pixel_shuffle``: ``on`` (the paper) or ``off``.

Cell names are the workflow's wildcards (``lens-medsam+sam/p1-dcl/shuffle-on``), so adding a
value to the config adds jobs and nothing else reruns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..schema import BLEND_KINDS, MASK_SOURCES, MASKED_VIEW, SEGMENTERS

#: Lens sources in canonical order (a cell's name lists them in this order).
LENS_SOURCES = SEGMENTERS + ("expert",)
assert set(LENS_SOURCES) == set(MASK_SOURCES)
NO_LENS = "none"
PHASE1_LOSSES = ("dcl", "infonce")
SHUFFLE = {True: "on", False: "off"}


@dataclass(frozen=True)
class Cell:
    lens: tuple[str, ...]  # canonical order; empty = original images only
    phase1_loss: str
    pixel_shuffle: bool

    @property
    def lens_name(self) -> str:
        return "+".join(self.lens) or NO_LENS

    @property
    def wildcards(self) -> dict[str, str]:
        return {"lens": self.lens_name, "loss": self.phase1_loss, "shuffle": SHUFFLE[self.pixel_shuffle]}

    @property
    def name(self) -> str:
        w = self.wildcards
        return f"lens-{w['lens']}/p1-{w['loss']}/shuffle-{w['shuffle']}"

    @property
    def baseline(self) -> Cell:
        """The same cell trained on original images only."""
        return Cell((), self.phase1_loss, self.pixel_shuffle)

    def settings(self) -> dict:
        return {"lens": self.lens_name, "phase1_loss": self.phase1_loss, "pixel_shuffle": SHUFFLE[self.pixel_shuffle]}


def make_cell(lens, phase1_loss: str, pixel_shuffle) -> Cell:
    """A cell from config values or wildcards; raise ValueError naming a bad value."""
    if isinstance(lens, str):
        lens = [] if lens == NO_LENS else lens.split("+")
    unknown = [s for s in lens if s not in LENS_SOURCES]
    if unknown:
        raise ValueError(f"unknown lens source(s) {unknown}; choose from {list(LENS_SOURCES)} or {NO_LENS!r}")
    if phase1_loss not in PHASE1_LOSSES:
        raise ValueError(f"unknown phase-1 loss {phase1_loss!r}; choose from {list(PHASE1_LOSSES)}")
    if isinstance(pixel_shuffle, str):
        if pixel_shuffle not in ("on", "off"):
            raise ValueError(f"pixel shuffle must be on or off, got {pixel_shuffle!r}")
        pixel_shuffle = pixel_shuffle == "on"
    return Cell(tuple(s for s in LENS_SOURCES if s in set(lens)), phase1_loss, bool(pixel_shuffle))


def cell_from_wildcards(wildcards) -> Cell:
    return make_cell(wildcards["lens"], wildcards["loss"], wildcards["shuffle"])


def main_cell(evaluate_cfg: dict) -> Cell:
    m = evaluate_cfg["main"]
    return make_cell(m["lens"], m["phase1_loss"], m["pixel_shuffle"])


def grid_cells(evaluate_cfg: dict) -> list[Cell]:
    """Every cell to train, main first, then the grid, then the baselines (no duplicates).

    ``one_at_a_time`` varies one setting of the main cell at a time (the paper's ablations);
    ``product`` takes every combination.
    """
    main = main_cell(evaluate_cfg)
    grid = evaluate_cfg["grid"]
    lenses, losses, shuffles = grid["lens"], grid["phase1_loss"], grid["pixel_shuffle"]
    if grid["mode"] == "product":
        cells = [make_cell(*combo) for combo in itertools.product(lenses, losses, shuffles)]
    else:
        cells = [make_cell(v, main.phase1_loss, main.pixel_shuffle) for v in lenses]
        cells += [make_cell(main.lens, v, main.pixel_shuffle) for v in losses]
        cells += [make_cell(main.lens, main.phase1_loss, v) for v in shuffles]
    ordered = [main, *cells]
    if evaluate_cfg["baseline"]:
        ordered += [c.baseline for c in ordered if c.lens]
    return list(dict.fromkeys(ordered))


def baselines(cells: list[Cell]) -> dict[Cell, Cell]:
    """Lens cell -> its baseline, for the lens cells whose baseline is among ``cells``."""
    present = set(cells)
    return {c: c.baseline for c in cells if c.lens and c.baseline in present}


#: Lens source -> the release view columns phase 1 may draw for it. ``expert`` is the masked
#: view: it is made from expert masks where a dataset has them (SLAKE) and otherwise from the
#: first segmenter of ``render.masked_from`` that has masks (see the row's provenance).
SOURCE_VIEWS = {
    **{s: [f"{s}_{k}" for k in BLEND_KINDS] for s in SEGMENTERS},
    "expert": [MASKED_VIEW],
}


def lens_views(lens: tuple[str, ...]) -> list[str]:
    """The view columns a cell's phase 1 may use ([] = original images only)."""
    return [view for source in lens for view in SOURCE_VIEWS[source]]


def train_overrides(cell: Cell, seed: int) -> dict:
    """What a cell and seed change in the ``train:`` settings (merged one level deep)."""
    return {
        "seed": seed,
        "views": lens_views(cell.lens),
        "connector": {"pixel_shuffle": cell.pixel_shuffle},
        "align": {"loss": cell.phase1_loss},
    }


def cell_train_settings(train_settings: dict, cell: Cell, seed: int) -> dict:
    """A phase's training settings (``stages.train_settings``) for one cell and seed."""
    out = dict(train_settings)
    for key, value in train_overrides(cell, seed).items():
        if isinstance(value, dict):
            if key in out:  # a phase's settings hold only their own phase section
                out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
