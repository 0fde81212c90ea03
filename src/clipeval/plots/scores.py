"""Figures comparing checkpoints: score histograms (matched vs mismatched) and agreement heatmaps, from the long
score table with ``match`` or without (:func:`clipeval.metrics.compare.load_run_scores`). Random-init checkpoints
are labelled as such in every figure.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from clipeval.metrics.compare import select_ok
from clipeval.models.catalogue import is_random_init, label_checkpoint
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain

AXIS_LABELS = {
    "cosine": "cosine similarity (image, caption)",
    "percentile": "percentile of the score within its checkpoint (0-100)",
    "clip_score_100": "CLIP score, 100·max(cos, 0)",
    "clip_score_2_5": "CLIPScore, 2.5·max(cos, 0)",
}
PAIR_COLORS = {"matched": "tab:blue", "mismatched": "tab:orange"}
ALL_COLORS = {"all pairs": "tab:blue"}  # pairs with no match column: one group
RANDOM_NOTE = "RANDOM INIT (untrained weights):\nscores show no learned image-text alignment"


def _facet_title(checkpoint: str, group: pd.DataFrame) -> str:
    ok = select_ok(group)
    counts = (f"{int(ok['match'].sum())} matched, {int((~ok['match']).sum())} mismatched" if "match" in ok
              else f"{len(ok)} pairs")
    excluded = len(group) - len(ok)
    if excluded:
        counts += f", {excluded} not ok (excluded)"
    lines = textwrap.wrap(checkpoint, 40, break_on_hyphens=False)
    if is_random_init(checkpoint):
        lines.append(RANDOM_NOTE)
    return plain("\n".join([*lines, counts]))


def plot_score_histograms(table: pd.DataFrame, score: str = "cosine", bins: int = 30,
                          path: str | Path | None = None) -> Figure:
    """Histogram + KDE of ``score`` (matched vs mismatched), one facet per checkpoint, ``bins`` shared by all.

    Each group is normalised to unit area within its facet, so groups of different sizes compare by shape.
    Rows not ok are left out and counted in each facet's title; a table without ``match`` is one group.

    Raises:
        ValueError: no row has status ok.
    """
    ok = select_ok(table)
    if ok.empty:
        raise ValueError("no pair has status ok: nothing to plot")
    checkpoints = list(pd.unique(table["checkpoint"]))
    titles = {name: _facet_title(name, group) for name, group in table.groupby("checkpoint", sort=False)}
    marked = "match" in ok
    colors = PAIR_COLORS if marked else ALL_COLORS
    data = ok.assign(pair=np.where(ok["match"], "matched", "mismatched") if marked else "all pairs",
                     model=ok["checkpoint"].map(titles))
    grid = sns.displot(data, x=score, hue="pair", hue_order=list(colors), palette=colors,
                       col="model", col_order=[titles[name] for name in checkpoints],
                       col_wrap=min(3, len(checkpoints)), bins=np.histogram_bin_edges(data[score], bins),
                       stat="density", common_norm=False, kde=True, height=3.2, aspect=1.35,
                       facet_kws={"sharey": False})
    grid.set_titles("{col_name}", size=9)
    grid.set_axis_labels(AXIS_LABELS.get(score, score), "density (each group integrates to 1)")
    for name, ax in zip(checkpoints, grid.axes.flat):
        if is_random_init(name):  # the note is in the title, in red: a box in the panel would cover bars
            ax.title.set_color("darkred")
    grid.figure.suptitle(f"{'Matched vs mismatched pairs' if marked else 'Every pair scored'}: "
                         f"{AXIS_LABELS.get(score, score)}, per checkpoint", y=1.02)
    grid.legend.set_title("pair type")
    return save_figure(grid.figure, path)


def plot_spearman_heatmap(matrix: pd.DataFrame, n_pairs: int, score: str = "cosine",
                          path: str | Path | None = None) -> Figure:
    """Heatmap of the Spearman correlation of pair scores between checkpoints, over ``n_pairs`` (those ok under
    every checkpoint, shown in the title)."""
    labels = [plain("\n".join(textwrap.wrap(label_checkpoint(name), 28, break_on_hyphens=False)))
              for name in matrix.columns]
    size = 2.5 + 1.3 * len(labels)
    figure, ax = plt.subplots(figsize=(size + 1.5, size))
    sns.heatmap(matrix.set_axis(labels, axis=0).set_axis(labels, axis=1), ax=ax, vmin=-1, vmax=1,
                cmap="vlag", annot=True, fmt=".2f", square=True, cbar_kws={"label": "Spearman ρ"})
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("checkpoint")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    ax.set_title(f"Agreement between checkpoints: Spearman ρ of pair {score}\n"
                 f"(n = {n_pairs} pairs ok under every checkpoint)", fontsize=10)
    return save_figure(figure, path)
