"""What every labeller returns, so eval-set building and label-quality checks need not know which one ran.

Every input image is accounted for in :attr:`LabelRun.images` (read or not, its labels kept, why it has none),
so no image silently disappears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

LABEL_COLUMNS = ("image", "text", "confidence", "labeller", "model", "threshold")
IMAGE_COLUMNS = ("image", "status", "error", "n_labels")


@dataclass
class LabelRun:
    """The output of one labeller over a list of images.

    Attributes:
        labels: one row per kept (image, text) label, :data:`LABEL_COLUMNS`; ``confidence`` in [0, 1] and
            ``threshold`` NaN where the labeller has none (an API caption).
        images: one row per input image, in input order, :data:`IMAGE_COLUMNS`; ``status`` is ``ok``, a read or
            decode failure or a labeller's own (``no_label``, ``api_error``...).
        stats: counts and the labeller's settings.
    """

    labels: pd.DataFrame
    images: pd.DataFrame
    stats: dict = field(default_factory=dict)


class Labeller(Protocol):
    """Anything that turns images into labelled queries; ``name`` is written in the ``labeller`` column
    (``classifier``, ``captioner``, ``api``, ``zero-shot``), ``model`` is the model it uses."""

    name: str
    model: str

    def label(self, refs: list[str], base_dir: Path | None = None) -> LabelRun:
        """Label the images ``refs`` (paths relative to ``base_dir``, or absolute, or URLs)."""


def empty_labels() -> pd.DataFrame:
    """A labels table with no rows and the right columns."""
    return pd.DataFrame({column: pd.Series(dtype=float if column in ("confidence", "threshold") else object)
                         for column in LABEL_COLUMNS})


def image_table(refs: list[str], statuses: list[str], errors: list[str], labels: pd.DataFrame) -> pd.DataFrame:
    """:attr:`LabelRun.images` from per-image read outcomes and the kept labels.

    An image read ``ok`` that kept no label gets the status ``no_label``.
    """
    counts = labels.groupby("image").size() if len(labels) else pd.Series(dtype=int)
    n_labels = [int(counts.get(ref, 0)) for ref in refs]
    statuses = ["no_label" if status == "ok" and n == 0 else status for status, n in zip(statuses, n_labels)]
    errors = ["no label passed the labeller's filters" if status == "no_label" and not error else error
              for status, error in zip(statuses, errors)]
    return pd.DataFrame({"image": refs, "status": statuses, "error": errors, "n_labels": n_labels},
                        columns=list(IMAGE_COLUMNS))


def run_stats(labels: pd.DataFrame, images: pd.DataFrame, **settings) -> dict:
    """The counts every :class:`LabelRun` reports, plus the labeller's settings."""
    return {"images": len(images), "images_labelled": int((images["n_labels"] > 0).sum()),
            "labels": len(labels), "unique_texts": int(labels["text"].nunique()) if len(labels) else 0,
            "status_counts": images["status"].value_counts().to_dict(), **settings}
