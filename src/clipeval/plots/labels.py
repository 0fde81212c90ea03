"""Figures of the pseudo-labelling study (notebook 07): confidences, the threshold's trade-off,
labelled examples, and retrieval metrics on pseudo-labelled sets beside their true twins."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from clipeval.data.images import read_image
from clipeval.models.catalogue import label_checkpoint
from clipeval.plots.retrieval import DIRECTION_LABELS
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_confidence_histograms(labels: pd.DataFrame, thresholds: dict[str, float],
                               path: str | Path | None = None) -> plt.Figure:
    """Per label source (``source`` column): the histogram of label confidences, its cut marked."""
    sources = list(dict.fromkeys(labels["source"]))
    figure, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.4), squeeze=False)
    for ax, source in zip(axes[0], sources):
        ax.hist(labels.loc[labels["source"] == source, "confidence"], bins=np.linspace(0, 1, 21), color="tab:blue")
        ax.axvline(thresholds[source], color="tab:red", linestyle="--", label=f"threshold {thresholds[source]:g}")
        ax.set(title=plain(source), xlabel="label confidence", ylabel="labels")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_threshold_tradeoff(sweep: pd.DataFrame, thresholds: dict[str, float],
                            path: str | Path | None = None) -> plt.Figure:
    """Label precision, recall and image coverage against the confidence threshold, per source."""
    sources = list(dict.fromkeys(sweep["source"]))
    figure, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources), 3.6), squeeze=False, sharey=True)
    for ax, source in zip(axes[0], sources):
        rows = sweep[sweep["source"] == source]
        for column, colour in (("precision", "tab:green"), ("recall", "tab:orange"), ("coverage", "tab:blue")):
            ax.plot(rows["threshold"], rows[column], marker="o", markersize=3, color=colour, label=column)
        ax.axvline(thresholds[source], color="tab:red", linestyle="--", label="chosen threshold")
        ax.set(title=plain(source), xlabel="confidence threshold", ylim=(-0.02, 1.02))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    axes[0][0].set_ylabel("share")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_labelled_examples(examples: pd.DataFrame, base_dir: str | Path | None, n: int = 8,
                           path: str | Path | None = None) -> plt.Figure:
    """Images with the labels each source gave them (``image``, ``source``, ``labels``, ``truth`` columns).

    ``labels`` is the text of the source's labels (empty for none) and ``truth`` what the image
    truly holds; a label the truth does not hold is marked with a ``✗``.
    """
    images = list(dict.fromkeys(examples["image"]))[:n]
    columns = min(4, len(images))
    rows = int(np.ceil(len(images) / columns))
    lines = max(len(_caption(examples[examples["image"] == ref]).splitlines()) for ref in images)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, rows * (2.6 + 0.17 * lines)), squeeze=False,
                                layout="constrained")
    for ax, ref in zip(axes.flat, images):
        loaded = read_image(ref, Path(base_dir) if base_dir else None)
        if loaded.image is not None:
            ax.imshow(loaded.image)
        ax.set_title(_caption(examples[examples["image"] == ref]), fontsize=7, loc="left")
        ax.axis("off")
    for ax in axes.flat[len(images):]:
        ax.axis("off")
    return save_figure(figure, path)


def _caption(rows: pd.DataFrame) -> str:
    truth = rows["truth"].iloc[0]
    lines = ["truth: " + truth] if truth else []
    for row in rows.itertuples():
        marked = ", ".join(label if label in truth else f"{label} ✗" for label in row.labels.split("; ") if label)
        lines.append(f"{row.source}: {marked or '(no label)'}")
    return plain("\n".join(textwrap.fill(line, 44, subsequent_indent="  ") for line in lines))


def plot_pseudo_vs_true(metrics: pd.DataFrame, metric: str = "hit_rate", k: int = 5,
                        path: str | Path | None = None) -> plt.Figure:
    """A metric per checkpoint on each pseudo-labelled set (dots) and on its true twin (rings), per direction.

    ``metrics`` holds ``metrics.csv`` rows with ``source`` and ``set`` (``pseudo`` / ``true``) columns.
    """
    rows = metrics[metrics["k"] == k]
    sources, directions = list(dict.fromkeys(rows["source"])), list(dict.fromkeys(rows["direction"]))
    checkpoints = list(dict.fromkeys(rows["checkpoint"]))
    figure, axes = plt.subplots(1, len(directions), figsize=(5.5 * len(directions), 0.5 * len(checkpoints)
                                                             * len(sources) + 2.4), squeeze=False, sharey=True)
    labels = [plain(f"{label_checkpoint(spec)}\non {source}") for source in sources for spec in checkpoints]
    for ax, direction in zip(axes[0], directions):
        for y, (source, spec) in enumerate((source, spec) for source in sources for spec in checkpoints):
            mine = rows[(rows["direction"] == direction) & (rows["source"] == source) & (rows["checkpoint"] == spec)]
            values = mine.set_index("set")[metric]
            ax.plot([values["pseudo"], values["true"]], [y, y], color="grey", linewidth=1, zorder=1)
            ax.scatter(values["pseudo"], y, color="tab:blue", zorder=2, label="pseudo labels" if y == 0 else None)
            ax.scatter(values["true"], y, facecolors="none", edgecolors="tab:green", s=60, zorder=2,
                       label="true relevance" if y == 0 else None)
        ax.set(title=DIRECTION_LABELS[direction], xlabel=f"{metric.replace('_', ' ')}@{k}", xlim=(-0.02, 1.02),
               yticks=range(len(labels)), yticklabels=labels)
        ax.invert_yaxis()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    figure.tight_layout()
    return save_figure(figure, path)
