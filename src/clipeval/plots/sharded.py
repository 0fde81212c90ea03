"""Figures of sharded runs (notebook 09): throughput per shard and executor."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_shard_throughput(shards: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Rows per second of each shard (its own read, decode, encode and write time), one bar per executor, from
    ``shards.csv`` rows with ``executor``."""
    done = shards.dropna(subset=["rows_per_s"]).assign(rows_per_s=lambda t: t["rows_per_s"].astype(float),
                                                       name=lambda t: t["name"].map(plain),
                                                       executor=lambda t: t["executor"].map(plain))
    figure, ax = plt.subplots(figsize=(max(5.0, 0.7 * done["name"].nunique() + 2), 3.8))
    sns.barplot(done, x="name", y="rows_per_s", hue="executor", ax=ax)
    ax.set(xlabel="shard", ylabel="rows per second (in-shard)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(title="executor", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return save_figure(figure, path)
