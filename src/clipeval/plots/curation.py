"""Figures of curation (notebook 08): kept fraction vs threshold, examples around a cut, drop reasons,
kept-set overlap, and each rule's precision and recall for keeping matched pairs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clipeval.data.images import read_image
from clipeval.models.catalogue import label_checkpoint
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_kept_fraction(curve: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Share of ok pairs kept against an absolute cosine threshold, one line per checkpoint."""
    figure, ax = plt.subplots(figsize=(6.5, 4))
    for spec, rows in curve.groupby("checkpoint", sort=False):
        ax.plot(rows["threshold"], rows["kept_fraction"], label=plain(label_checkpoint(spec)))
    ax.set(xlabel="cosine threshold (keep >=)", ylabel="share of pairs kept", ylim=(-0.02, 1.02))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_curation_examples(groups: dict[str, pd.DataFrame], score: str, base_dir: str | Path | None,
                           path: str | Path | None = None) -> plt.Figure:
    """One row of images per group (a score decile, just above / below the cut) with caption and score."""
    names = [name for name, rows in groups.items() if len(rows)]
    columns = max(len(groups[name]) for name in names)
    figure, axes = plt.subplots(len(names), columns, figsize=(2.6 * columns, 2.9 * len(names)), squeeze=False,
                                layout="constrained")
    for row_axes, name in zip(axes, names):
        row_axes[0].set_ylabel(plain(name), fontsize=9)
        for ax, (_, row) in zip(row_axes, groups[name].iterrows()):
            loaded = read_image(row["image"], Path(base_dir) if base_dir else None)
            if loaded.image is not None:
                ax.imshow(loaded.image)
            ax.set_title(plain(textwrap.fill(f"{row[score]:.3f} · {row['caption']}", 30, max_lines=3,
                                             placeholder=" …")), fontsize=7)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    return save_figure(figure, path)


def plot_drop_reasons(dropped: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """How many rows each reason dropped (one bar per reason)."""
    counts = dropped["reason"].value_counts()
    figure, ax = plt.subplots(figsize=(7, 0.45 * len(counts) + 1.4))
    ax.barh([plain(textwrap.fill(reason, 60)) for reason in counts.index], counts.to_numpy(), color="tab:red")
    ax.invert_yaxis()
    ax.set(xlabel="rows dropped")
    ax.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_kept_overlap(matrix: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Jaccard overlap of the kept sets (rows and columns: rule or checkpoint names)."""
    labels = [plain(textwrap.fill(str(name), 28)) for name in matrix.index]
    figure, ax = plt.subplots(figsize=(1.6 * len(matrix) + 3, 1.2 * len(matrix) + 1.6))
    sns.heatmap(matrix.to_numpy(), annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax,
                xticklabels=labels, yticklabels=labels, cbar_kws={"label": "Jaccard |A∩B| / |A∪B|"})
    ax.tick_params(labelsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_precision_recall(curves: pd.DataFrame, marks: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Precision against recall of keeping matched pairs as the kept fraction grows, per checkpoint;
    ``marks`` (``checkpoint``, ``name``, ``precision``, ``recall``) are the presets' points."""
    figure, ax = plt.subplots(figsize=(6.5, 4.6))
    palette = dict(zip(curves["checkpoint"].unique(), sns.color_palette(n_colors=curves["checkpoint"].nunique())))
    for spec, rows in curves.groupby("checkpoint", sort=False):
        ax.plot(rows["recall"], rows["precision"], color=palette[spec], label=plain(label_checkpoint(spec)))
    for marker, (name, rows) in zip("osD^v", marks.groupby("name", sort=False)):
        ax.scatter(rows["recall"], rows["precision"], marker=marker, s=50, zorder=3, edgecolors="black",
                   c=[palette[spec] for spec in rows["checkpoint"]], label=plain(name))
    ax.set(xlabel="recall of matched pairs", ylabel="precision (matched share of kept)", xlim=(-0.02, 1.02),
           ylim=(np.nanmin([curves["precision"].min(), 0.5]) - 0.05, 1.02))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False, fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)
