"""Figures for the dual-encoder notebook (06): scene samples, training curves, similarity heatmap, retrieval by
seen/unseen combinations, matched vs mismatched cosine, hard-negative accuracy; the numbers come from
:mod:`clipeval.eval.scenes_benchmark`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from clipeval.data.images import open_image
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_scene_samples(scenes_dir: str | Path, split: str = "val", n: int = 8, seed: int = 0,
                       path: str | Path | None = None) -> Figure:
    """A grid of ``n`` random scenes of ``split``, each with one true caption (green) and one hard negative (red)."""
    scenes_dir = Path(scenes_dir)
    pairs = pd.read_csv(scenes_dir / f"pairs_{split}.csv", keep_default_na=False)
    chosen = pd.Series(pairs["scene_id"].unique()).sample(n, random_state=seed)
    panels = []
    for scene_id in chosen:
        rows = pairs[pairs["scene_id"] == scene_id]
        negatives = rows[~rows["match"]]
        negative = (plain(textwrap.fill(f"✗ ({negatives['negative_kind'].iloc[0]}) {negatives['caption'].iloc[0]}",
                                        36)) if len(negatives) else "")
        panels.append((rows["image"].iloc[0],
                       plain(textwrap.fill(f"✓ {rows[rows['match']]['caption'].iloc[0]}", 36)), negative))
    # rows grow with the longest caption above and below an image, so no caption reaches the next row
    lines = max(above.count("\n") + below.count("\n") + 2 for _, above, below in panels)
    columns, n_rows = min(4, n), -(-n // min(4, n))
    figure, axes = plt.subplots(n_rows, columns, figsize=(3.4 * columns, (2.9 + 0.15 * lines) * n_rows + 0.4),
                                squeeze=False, layout="constrained")
    figure.get_layout_engine().set(h_pad=0.1)  # inches between rows: room for the caption glyphs' full height
    for ax, (image, above, below) in zip(axes.flat, panels):
        ax.imshow(open_image(scenes_dir / image), interpolation="nearest")
        ax.set_title(above, fontsize=8, color="darkgreen", loc="left")
        ax.set_xlabel(below, fontsize=8, color="darkred", loc="left")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    figure.suptitle(f"Captioned scenes ({split} split): a true caption above, a hard negative below")
    return save_figure(figure, path)


def plot_training_history(history: dict, path: str | Path | None = None) -> Figure:
    """Training loss and validation retrieval per epoch, from a model folder's ``history.json``."""
    epochs = pd.DataFrame(history["epochs"])
    figure, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    loss_ax.plot(epochs["epoch"], epochs["train_loss"], marker="o", label="train (mean over the epoch)")
    loss_ax.axhline(np.log(history["config"]["batch_size"]), color="gray", linestyle="--",
                    label="chance: ln(batch size)")
    loss_ax.set(xlabel="epoch", ylabel="symmetric contrastive loss", title="Training loss")
    loss_ax.legend()
    for column, label in (("val_hit_rate@1", "HitRate@1"), ("val_hit_rate@5", "HitRate@5"),
                          ("val_hit_rate@10", "HitRate@10"), ("val_mrr", "MRR")):
        metric_ax.plot(epochs["epoch"], epochs[column], marker="o", label=label)
    metric_ax.set(xlabel="epoch", ylabel="metric on the validation split", ylim=(0, 1.02),
                  title="Validation text→image retrieval")
    metric_ax.legend()
    figure.suptitle(f"Dual encoder training: {history['n_train_scenes']} scenes, "
                    f"{history['train_seconds'] / 60:.1f} min on {history['device']}")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_similarity_heatmap(scores: np.ndarray, captions: list[str], images: list[Path],
                            relevant: np.ndarray | None = None, path: str | Path | None = None) -> Figure:
    """Cosine heatmap of captions (rows) x images (columns), with the images as column labels; ``relevant`` cells
    (an optional boolean matrix) are outlined."""
    n_rows, n_columns = scores.shape
    figure, ax = plt.subplots(figsize=(1.1 * n_columns + 5, 0.55 * n_rows + 2.2))
    sns.heatmap(scores, ax=ax, cmap="viridis", annot=True, fmt=".2f", annot_kws={"size": 7},
                cbar_kws={"label": "cosine similarity"},
                yticklabels=[plain("\n".join(textwrap.wrap(str(caption), 60))) for caption in captions],
                xticklabels=False)
    ax.tick_params(axis="y", labelsize=7)
    for column, image in enumerate(images):
        thumbnail = OffsetImage(np.asarray(open_image(image).convert("RGB")), zoom=0.55)
        ax.add_artist(AnnotationBbox(thumbnail, (column + 0.5, n_rows), xybox=(0, -22), xycoords="data",
                                     boxcoords="offset points", frameon=False, annotation_clip=False))
    if relevant is not None:
        for row, column in zip(*np.nonzero(relevant)):
            ax.add_patch(plt.Rectangle((column, row), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_xlabel("images", labelpad=50)
    ax.set_ylabel("captions")
    ax.set_title("Caption x image cosine similarity on a validation batch (red: caption describes image)")
    return save_figure(figure, path)


def plot_retrieval_subsets(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Bars of text->image HitRate@k and MRR for all, seen and unseen-combination queries
    (:func:`clipeval.eval.scenes_benchmark.summarize_retrieval`'s table)."""
    metrics = [column for column in table.columns if column.startswith("hit_rate@")] + ["mrr"]
    long = table[metrics].reset_index().melt(id_vars="queries", var_name="metric", value_name="value")
    labels = {name: f"{name} (n={int(table.loc[name, 'n_queries'])})" for name in table.index}
    long["queries"] = long["queries"].map(labels)
    figure, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(long, x="metric", y="value", hue="queries", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.2f", fontsize=7)
    ax.set(ylim=(0, 1.08), xlabel="metric", ylabel="value over queries",
           title="Test split text→image retrieval: seen vs unseen colour-shape combinations")
    ax.legend(title="queries", fontsize=8)
    return save_figure(figure, path)


def plot_match_histogram(scores: np.ndarray, relevance: np.ndarray, path: str | Path | None = None) -> Figure:
    """Cosine distribution of matched (caption describes image) vs mismatched caption-image pairs."""
    figure, ax = plt.subplots(figsize=(7, 3.8))
    bins = np.histogram_bin_edges(scores, 40)
    ax.hist(scores[~relevance], bins=bins, density=True, alpha=0.6, color="tab:orange",
            label=f"mismatched (n={(~relevance).sum():,})")
    ax.hist(scores[relevance], bins=bins, density=True, alpha=0.6, color="tab:blue",
            label=f"matched (n={relevance.sum():,})")
    ax.set(xlabel="cosine similarity (image, caption)", ylabel="density (each group integrates to 1)",
           title="Test split: every caption against every image")
    ax.legend()
    return save_figure(figure, path)


def plot_hard_negative_accuracy(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Bars of hard-negative accuracy per negative kind, seen vs unseen combinations
    (:func:`clipeval.eval.scenes_benchmark.hard_negative_accuracy`'s table)."""
    figure, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(table, x="negative_kind", y="accuracy", hue="subset", ax=ax)
    for container in ax.containers:  # opaque labels: a value near 0.5 stays legible over the chance line
        ax.bar_label(container, fmt="%.2f", fontsize=7, padding=2, zorder=4,
                     bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    ax.axhline(0.5, color="gray", linestyle="--", label="chance (0.5)", zorder=3)
    ax.set(ylim=(0, 1.08), xlabel="what the negative changes", ylabel="accuracy: true caption scores higher",
           title="Hard negatives: does the true caption beat its swapped twin?")
    ax.legend(fontsize=8)
    return save_figure(figure, path)
