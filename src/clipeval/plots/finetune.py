"""Figures of the fine-tuning study (notebook 11): paired differences with their CIs, and the training curves;
the numbers come from :mod:`clipeval.studies.finetune_modes`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from clipeval.plots.save import save_figure


def _forest(axis, table: pd.DataFrame, label: str, title: str) -> None:
    """One marker per mode within each group of ``label``, with its CI as a horizontal bar."""
    groups, modes = list(dict.fromkeys(table[label])), list(dict.fromkeys(table["mode"]))
    offsets = np.linspace(-0.25, 0.25, len(modes)) if len(modes) > 1 else np.zeros(1)
    for offset, mode in zip(offsets, modes):
        rows = table[table["mode"] == mode].set_index(label).reindex(groups)
        y = np.arange(len(groups)) + offset
        axis.errorbar(rows["difference"], y, xerr=[rows["difference"] - rows["ci_low"],
                                                   rows["ci_high"] - rows["difference"]],
                      fmt="o", capsize=3, label=mode)
    axis.axvline(0, color="grey", linewidth=1, linestyle="--")
    axis.set_yticks(np.arange(len(groups)), groups)
    axis.invert_yaxis()
    axis.set_xlabel("after - before (95% paired bootstrap CI)")
    axis.set_title(title)


def plot_finetune_differences(hard_negatives: pd.DataFrame, retrieval: pd.DataFrame, metric: str = "reciprocal_rank",
                              path: str | Path | None = None) -> Figure:
    """Hard-negative accuracy and text->image retrieval (``metric``, per query subset) changes per mode, each with
    its paired CI, from :class:`clipeval.studies.finetune_modes.FinetuneStudy`'s tables."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    _forest(left, hard_negatives, "negative_kind", "hard-negative accuracy (test)")
    shown = retrieval[(retrieval["direction"] == "text_to_image") & (retrieval["metric"] == metric)]
    _forest(right, shown, "queries", f"text->image {metric.replace('_', ' ')} (test)")
    right.legend(title="mode", loc="best", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_finetune_history(history: pd.DataFrame, metric: str = "val_mrr", path: str | Path | None = None) -> Figure:
    """Training loss and a validation metric per logged epoch, one line per mode."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for mode, rows in history.groupby("mode", sort=False):
        left.plot(rows["step"], rows["train_loss"], marker="o", label=mode)
        if metric in rows:
            right.plot(rows["step"], rows[metric], marker="o", label=mode)
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss (with hard negatives)")
    right.set_xlabel("optimizer step")
    right.set_ylabel(f"validation {metric.removeprefix('val_').replace('_', ' ')}")
    right.legend(title="mode", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)
