"""The plot of localization gains: the lens model minus the model without lens, per question category."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path
from .analysis import COMBINED
from .tables import HEADLINE, LABELS, TABLE2_GROUPS

CATEGORIES = TABLE2_GROUPS


def plot_gains(tables: dict, out_png: str | Path) -> Path:
    """One panel per (scope, headline metric): each dataset, then all pooled when there are
    several; one bar per category, error bars = sample std of the paired gain over seeds.
    Undefined gains are not drawn and are marked 'n/a'."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on cluster nodes
    import matplotlib.pyplot as plt
    import numpy as np

    entries = tables["localization"]
    names = list(entries[0]["scopes"]) if entries else []
    # `combined` equals the dataset when there is only one.
    scope_names = names if len(names) > 2 else [n for n in names if n != COMBINED]
    n_rows, n_cols = max(1, len(scope_names)), len(HEADLINE)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.5 * n_cols, 3.0 * n_rows), squeeze=False)
    x = np.arange(len(CATEGORIES))
    width = 0.8 / max(1, len(entries))
    for r, scope in enumerate(scope_names):
        for c, metric in enumerate(HEADLINE):
            ax = axes[r][c]
            for k, entry in enumerate(entries):
                gains = [entry["scopes"][scope][cat][metric]["gain"] for cat in CATEGORIES]
                means = [100 * g["mean"] if g["mean"] is not None else 0.0 for g in gains]
                errs = [100 * g["std"] if g["std"] is not None else 0.0 for g in gains]
                pos = x - 0.4 + width * (k + 0.5)
                ax.bar(pos, means, width, yerr=errs, capsize=2, label=entry["cell"])
                for p, g in zip(pos, gains):
                    if g["mean"] is None:
                        ax.annotate("n/a", (p, 0), ha="center", va="bottom", fontsize=7)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(x, CATEGORIES)
            ax.set_title(f"{scope}: {LABELS[metric]}", fontsize=10)
            ax.set_ylabel("gain over baseline (points)")
    if entries:
        axes[0][0].legend(fontsize=7, loc="best")
    n = len(tables["seeds"])
    fig.suptitle(f"With minus without lens (mean ± std over {n} seed{'s' if n != 1 else ''})", fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return out_png
