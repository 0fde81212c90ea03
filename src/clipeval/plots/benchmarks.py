"""Benchmark figures: an accuracy per category and checkpoint, with its CI and the category's chance level."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from clipeval.models.catalogue import label_checkpoint
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_accuracy_by_category(table: pd.DataFrame, category: str, value: str, title: str, ylabel: str,
                              path: str | Path | None = None) -> Figure:
    """Grouped bars: one group per ``category`` value, one bar per checkpoint, each with its 95% CI, and the
    group's chance level as a dashed line across it.

    Args:
        table: rows with ``checkpoint``, ``category``, ``value``, ``ci_low``, ``ci_high`` and ``chance``.
    """
    categories = list(dict.fromkeys(table[category]))
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    width = 0.8 / len(checkpoints)
    figure, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(categories) * max(1, len(checkpoints) / 2)), 4.0))
    for n, spec in enumerate(checkpoints):
        rows = table[table["checkpoint"] == spec].set_index(category).reindex(categories)
        x = np.arange(len(categories)) + (n - (len(checkpoints) - 1) / 2) * width
        errors = np.vstack([rows[value] - rows["ci_low"], rows["ci_high"] - rows[value]]).clip(min=0)
        ax.bar(x, rows[value], width, yerr=errors, capsize=3, label=plain(label_checkpoint(spec)), zorder=2)
        for left, estimate, top in zip(x, rows[value], rows["ci_high"]):  # above the CI: never under its bar
            ax.text(left, top + 0.02, f"{estimate:.2f}", ha="center", va="bottom", fontsize=7, zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # legible over the chance line
    chance = table.groupby(category, sort=False)["chance"].first().reindex(categories)
    for position, level in enumerate(chance):
        ax.hlines(level, position - 0.45, position + 0.45, colors="gray", linestyles="--", zorder=3,
                  label="chance" if position == 0 else None)
    ax.set_xticks(np.arange(len(categories)), [plain(str(name)) for name in categories], fontsize=8)
    ax.set(ylim=(0, 1.12), ylabel=ylabel, title=plain(title))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(3, len(checkpoints) + 1),
              frameon=False)
    return save_figure(figure, path)
