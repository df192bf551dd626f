"""QC gallery: pictures a person can scan to judge a release.

Per dataset:
- ``samples/<split>.png``: for a seeded sample of images per split, one line each: the original,
  the original with every mask outlined and labelled, then every view (with the outlines of the
  masks that made it), or the reason the view is missing;
- ``summary.png``: masks per image, mask area, alpha histogram and missing views (by reason),
  from the same streaming statistics as the dataset card.

Images are shown as thumbnails (longest side :data:`THUMB`), so a gallery of a large release is
made in seconds; only the sampled rows are decoded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..atomic import write_bytes
from ..provenance import seeded_int
from ..schema import MASKED_VIEW, SEGMENTERS, SOURCE_COLOURS, VIEW_COLUMNS
from ..segment import rle
from .manifest import MANIFEST
from .stats import NO_MASK_SOURCE, NO_MASKS, NOT_RUN, SplitStats, iter_rows, release_stats

#: Longest side of the thumbnails drawn in the gallery, in pixels.
THUMB = 256
PANEL_INCHES = 2.3


def sample_ids(image_ids: list[str], k: int, seed: int) -> list[str]:
    """``k`` image ids chosen by a seeded hash: the same release and seed give the same sample,
    whatever the shard layout."""
    ranked = sorted(set(image_ids), key=lambda i: seeded_int("gallery", seed, i))
    return sorted(ranked[:k])


def _split_rows(release_dir: Path, shards: list[dict], k: int, seed: int) -> list[dict]:
    ids = [i for s in shards for r in iter_rows(release_dir / s["file"], ["image_id"]) for i in r.values()]
    wanted = set(sample_ids(ids, k, seed))
    rows = [r for s in shards for r in iter_rows(release_dir / s["file"]) if r["image_id"] in wanted]
    return sorted(rows, key=lambda r: r["image_id"])


def _thumb(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img.thumbnail((THUMB, THUMB), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _mask_thumb(mask: dict, shape: tuple[int, int]) -> np.ndarray:
    decoded = Image.fromarray(rle.decode(mask["rle"]).astype(np.uint8) * 255)
    return np.asarray(decoded.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 0


def _outline(ax, masks: list[dict], shape, labels: bool) -> None:
    for m in masks:
        arr = _mask_thumb(m, shape)
        if not arr.any():
            continue
        colour = SOURCE_COLOURS.get(m["segmenter"], "white")
        ax.contour(arr.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.9)
        if labels:
            ys, xs = np.nonzero(arr)
            # Expert masks carry no model score.
            score = "" if m["score"] is None else f" {m['score']:.2f}"
            ax.text(
                xs.min(),
                ys.min(),
                f"{m['label']}{score}",
                color="white",
                fontsize=5,
                va="bottom",
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.6, "linewidth": 0},
            )


def _missing_reason(row: dict, view: str) -> str:
    ran = {s["segmenter"] for s in row["provenance"]["segmenters"] or []}
    if view == MASKED_VIEW:
        return NO_MASK_SOURCE
    return NO_MASKS if view.split("_", 1)[0] in ran else NOT_RUN


def _view_masks(row: dict, view: str) -> list[dict]:
    source = row["provenance"]["masked_from"] if view == MASKED_VIEW else view.split("_", 1)[0]
    return [m for m in row["masks"] or [] if m["segmenter"] == source]


def samples_figure(rows: list[dict], title: str) -> Figure:
    columns = ["original", "masks", *VIEW_COLUMNS]
    fig = Figure(figsize=(PANEL_INCHES * len(columns), PANEL_INCHES * max(1, len(rows)) + 0.6), dpi=110)
    fig.suptitle(title, fontsize=11)
    if not rows:
        fig.text(0.5, 0.5, "no rows in this split", ha="center")
        return fig
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        base = _thumb(row["image"]["bytes"])
        shape = base.shape[:2]
        alpha = ", ".join(f"a_{s}={row['alpha'][s]:.2f}" for s in SEGMENTERS if row["alpha"][s] is not None)
        for c, col in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col, fontsize=8)
            if col in ("original", "masks"):
                ax.imshow(base)
                if col == "masks":
                    _outline(ax, row["masks"] or [], shape, labels=True)
                continue
            cell = row[col]
            if cell is None:
                ax.imshow(np.full((*shape, 3), 40, np.uint8))
                ax.text(
                    shape[1] / 2,
                    shape[0] / 2,
                    f"missing:\n{_missing_reason(row, col)}",
                    color="white",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
                continue
            ax.imshow(_thumb(cell["bytes"]))
            _outline(ax, _view_masks(row, col), shape, labels=False)
        axes[r][0].set_ylabel(
            f"{row['image_id']}\n{row['modality'] or '?'} / {row['body_region'] or '?'}\n"
            f"{row['width']}x{row['height']}, {len(row['qa'])} QA\n{alpha}",
            fontsize=6,
            rotation=0,
            ha="right",
            va="center",
        )
    fig.subplots_adjust(left=0.1, right=0.995, top=1 - 0.5 / fig.get_figheight(), bottom=0.01, wspace=0.03, hspace=0.05)
    return fig


def summary_figure(name: str, stats: dict[str, SplitStats], alpha_cfg: dict) -> Figure:
    fig = Figure(figsize=(12, 8), dpi=100)
    fig.suptitle(f"{name}: {sum(s.rows for s in stats.values())} rows in splits {', '.join(stats)}", fontsize=11)
    (a_masks, a_area), (a_alpha, a_missing) = fig.subplots(2, 2)
    merged = {
        key: {seg: [v for s in stats.values() for v in getattr(s, key).get(seg, [])] for seg in SEGMENTERS}
        for key in ("masks_per_image", "area_fraction", "alpha")
    }

    per_image = {s: v for s, v in merged["masks_per_image"].items() if v}
    if per_image:
        top = max(max(v) for v in per_image.values())
        a_masks.hist(
            list(per_image.values()),
            bins=np.arange(top + 2) - 0.5,
            label=list(per_image),
            color=[SOURCE_COLOURS[s] for s in per_image],
        )
        a_masks.legend()
    a_masks.set(title="masks per image", xlabel="masks", ylabel="images")

    areas = {s: v for s, v in merged["area_fraction"].items() if v}
    if areas:
        bins = np.logspace(-4, 0, 30)
        a_area.hist(list(areas.values()), bins=bins, label=list(areas), color=[SOURCE_COLOURS[s] for s in areas])
        a_area.set_xscale("log")
        a_area.legend()
    a_area.set(title="mask area (fraction of the image)", xlabel="area / image area", ylabel="masks")

    alphas = {s: v for s, v in merged["alpha"].items() if v}
    if alphas:
        a_alpha.hist(
            list(alphas.values()),
            bins=np.linspace(0, 1, 41),
            label=list(alphas),
            color=[SOURCE_COLOURS[s] for s in alphas],
        )
        a_alpha.legend()
    for bound in (alpha_cfg["min"], alpha_cfg["max"]):
        a_alpha.axvline(bound, color="grey", linestyle="--", linewidth=1)
    a_alpha.set(
        title=f"alpha ~ N({alpha_cfg['mean']}, {alpha_cfg['std']}) clipped to [{alpha_cfg['min']}, {alpha_cfg['max']}]",
        xlabel="alpha",
        ylabel="images",
    )

    reasons = sorted({reason for s in stats.values() for c in s.missing.values() for reason in c})
    x = np.arange(len(VIEW_COLUMNS))
    bottom = np.zeros(len(VIEW_COLUMNS))
    for reason in reasons:
        counts = np.array([sum(s.missing.get(v, {}).get(reason, 0) for s in stats.values()) for v in VIEW_COLUMNS])
        a_missing.bar(x, counts, bottom=bottom, label=reason)
        bottom += counts
    a_missing.set_xticks(x, VIEW_COLUMNS, rotation=20, fontsize=8)
    a_missing.set(title=f"views missing (of {sum(s.rows for s in stats.values())} rows each)", ylabel="rows")
    if reasons:
        a_missing.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    # No software/version metadata: the same release gives the same PNG bytes.
    fig.savefig(buf, format="png", metadata={"Software": None})
    write_bytes(path, buf.getvalue())


def make_gallery(release_dir, dataset: str, out_dir, images_per_split: int, seed: int) -> list[Path]:
    """Write ``summary.png`` and ``samples/<split>.png`` for one dataset; returns the paths."""
    release_dir, out_dir = Path(release_dir), Path(out_dir)
    manifest = json.loads((release_dir / MANIFEST).read_text())
    if dataset not in manifest["datasets"]:
        raise ValueError(f"{release_dir / MANIFEST}: no dataset {dataset!r} (has {sorted(manifest['datasets'])})")
    d = manifest["datasets"][dataset]
    written = []
    for split, s in sorted(d["splits"].items()):
        rows = _split_rows(release_dir, s["shards"], images_per_split, seed)
        title = f"{dataset} / {split}: {len(rows)} of {s['rows']} images (seed {seed})"
        path = out_dir / "samples" / f"{split}.png"
        _save(samples_figure(rows, title), path)
        written.append(path)
    stats = release_stats(release_dir, {"datasets": {dataset: d}})[dataset]
    path = out_dir / "summary.png"
    _save(summary_figure(dataset, stats, manifest["build"]["render"]["alpha"]), path)
    written.append(path)
    return written
