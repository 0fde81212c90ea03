"""Saving figures: every PNG the project writes goes through :func:`save_figure`."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from clipeval.atomic import atomic_path


def save_figure(figure: plt.Figure, path: str | Path | None) -> plt.Figure:
    """Save ``figure`` as PNG at ``path`` atomically (nothing when ``path`` is None); return it."""
    if path is not None:
        with atomic_path(path) as temp:
            figure.savefig(temp, format="png", dpi=120, bbox_inches="tight")
    return figure
