"""The image finder's figures: a grid of search results, one row per query, from the index's thumbnails."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from clipeval.data.images import read_image
from clipeval.plots.save import save_figure
from clipeval.plots.text import plain


def plot_hits(results: dict[str, list], index_dir: str | Path, title: str, path: str | Path | None = None
              ) -> plt.Figure:
    """One row per query (its text or image id as the row's title), then its hits' thumbnails with scores.

    ``results``: query label -> its hits in rank order (objects with ``id``, ``score``, ``caption`` and
    ``thumbnail``, the thumbnail's path relative to ``index_dir``).
    """
    columns = max((len(hits) for hits in results.values()), default=1) or 1
    labels = {query: [_label(hit) for hit in hits] for query, hits in results.items()}
    # rows grow with the longest label shown, so labels never reach the next row's title
    lines = max((label.count("\n") + 1 for shown in labels.values() for label in shown), default=1)
    figure, axes = plt.subplots(len(results), columns, figsize=(2.2 * columns, (2.5 + 0.16 * lines) * len(results)),
                                squeeze=False)
    for axes_row, (query, hits) in zip(axes, results.items()):
        axes_row[0].set_title(plain(textwrap.fill(f"“{query}”", 70)), loc="left", fontsize=9, x=0)
        for ax in axes_row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
        for ax, hit, label in zip(axes_row, hits, labels[query]):
            loaded = read_image(str(Path(index_dir) / hit.thumbnail))
            if loaded.image is not None:
                ax.imshow(loaded.image)
            ax.axis("on")
            ax.set_xlabel(plain(label), fontsize=7)
    figure.suptitle(plain(title), fontsize=11)
    figure.tight_layout()
    return save_figure(figure, path)


def _label(hit) -> str:
    """A hit's score and id, then its caption wrapped (none when the collection has no captions)."""
    caption = "" if pd.isna(hit.caption) or not hit.caption else "\n" + textwrap.fill(str(hit.caption), 26)
    return f"{hit.score:.3f} · {hit.id}{caption}"
