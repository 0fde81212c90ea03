"""Figures for exploring a pairs table (notebook 01)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from clipeval.data.images import read_image
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_image_sizes(info: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Scatter of image width vs height coloured by PIL mode, and a bar chart of mode counts."""
    readable = info[info["readable"]]
    figure, (sizes, modes) = plt.subplots(1, 2, figsize=(11, 4))
    sns.scatterplot(data=readable, x="width", y="height", hue="mode", style="format", s=70, ax=sizes)
    sizes.set(title="Image sizes (pixels)", xlabel="width (px)", ylabel="height (px)")
    readable["mode"].value_counts().plot.bar(ax=modes, color="steelblue")
    modes.set(title="Image modes", xlabel="PIL mode", ylabel="images")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_caption_lengths(lengths: pd.DataFrame, path: str | Path | None = None) -> plt.Figure:
    """Histograms of caption length in words and in characters."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column in zip(axes, ("words", "characters")):
        sns.histplot(lengths[column], ax=ax, discrete=column == "words", color="slateblue")
        ax.set(title=f"Caption length ({column})", xlabel=column, ylabel="captions")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_sample_grid(pairs: pd.DataFrame, image_column: str = "image", caption_column: str = "caption",
                     n: int = 12, columns: int = 4, seed: int = 0, path: str | Path | None = None) -> plt.Figure:
    """A grid of ``n`` sampled pairs: each image with its caption (and match flag when known).

    Rows grow with the longest wrapped caption, so a caption never runs into the image above it.
    """
    sample = pairs.sample(min(n, len(pairs)), random_state=seed).sort_index()
    rows = -(-len(sample) // columns)
    flags = (sample["match"].map({True: "[match] ", False: "[mismatch] "}) if "match" in sample.columns
             else pd.Series("", index=sample.index))
    titles = [plain(textwrap.fill(flag + str(caption), 34)) for flag, caption in zip(flags, sample[caption_column])]
    caption_lines = max((title.count("\n") + 1 for title in titles), default=1)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, (3.0 + 0.16 * caption_lines) * rows + 0.5),
                                squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, title, ref in zip(axes.flat, titles, sample[image_column]):
        loaded = read_image(ref, pairs.attrs.get("base_dir"))
        if loaded.image is not None:
            ax.imshow(loaded.image)
        else:
            ax.text(0.5, 0.5, plain(loaded.status), ha="center", va="center", color="red")
        ax.set_title(title, fontsize=8)
    figure.suptitle("Sample pairs", fontsize=12)
    return save_figure(figure, path)
