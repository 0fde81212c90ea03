"""Classification metrics as pure functions of true labels and ranked predictions (docs/benchmarks.md): top-k
accuracy, mean per-class recall (CLIP_benchmark's ``mean_per_class_recall``, scikit-learn's
``balanced_accuracy_score``: a large class weighs no more than a small one) and their chance levels.

The same mean of per-group rates is SugarCrepe's mean over its categories, so :func:`bootstrap_mean_per_group`
serves both: its interval resamples items (images, hard negatives), as every CI here does, and recomputes the
mean over groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clipeval.metrics.bootstrap import BootstrapInterval, bootstrap_ci


def top_k_chance(n_classes: int, k: int) -> float:
    """Top-k accuracy of a uniformly random ranking of ``n_classes`` classes: ``min(k, C) / C``."""
    if n_classes < 1 or k < 1:
        raise ValueError(f"need at least one class and k >= 1, got {n_classes} classes and k={k}")
    return min(k, n_classes) / n_classes


def top_k_hits(top_classes: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each item's label is among its first ``k`` ranked classes (``top_classes``: ``(N, K)``, best
    first, ``K >= k``)."""
    top_classes = np.asarray(top_classes)
    if top_classes.ndim != 2 or top_classes.shape[1] < k:
        raise ValueError(f"need (N, K >= {k}) ranked classes, got shape {top_classes.shape}")
    return (top_classes[:, :k] == np.asarray(labels)[:, None]).any(axis=1)


def mean_per_group_rate(groups: Sequence[int] | np.ndarray, hits: Sequence[bool] | np.ndarray) -> float:
    """The mean over groups (those with items) of each group's hit rate; NaN without items.

    With classes as groups and top-1 hits it is the mean per-class recall.
    """
    groups, hits = np.asarray(groups, dtype=np.int64), np.asarray(hits, dtype=np.float64)
    if not len(groups):
        return float("nan")
    totals = np.bincount(groups)
    found = np.bincount(groups, weights=hits, minlength=len(totals))
    present = totals > 0
    return float((found[present] / totals[present]).mean())


def _group_mean_of_codes(codes: np.ndarray, axis: int = 1) -> np.ndarray:
    """:func:`mean_per_group_rate` of each row of items coded ``2 * group + hit`` (a bootstrap statistic)."""
    codes = np.atleast_2d(codes).astype(np.int64)
    return np.array([mean_per_group_rate(row // 2, row % 2) for row in codes])


def bootstrap_mean_per_group(groups: Sequence[int] | np.ndarray, hits: Sequence[bool] | np.ndarray,
                             n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """:func:`mean_per_group_rate` (``groups``: an integer id >= 0 per item) with its bootstrap interval over
    items; ``n_resamples``, ``confidence``, ``seed`` as :func:`clipeval.metrics.bootstrap.bootstrap_ci`.

    A group that loses all its items in a resample drops out of that resample's mean, as it would from a
    dataset without it.
    """
    groups, hits = np.asarray(groups, dtype=np.int64), np.asarray(hits, dtype=bool)
    if groups.shape != hits.shape or (groups < 0).any():
        raise ValueError("groups and hits must be equally long, groups integers >= 0")
    return bootstrap_ci(2 * groups + hits, _group_mean_of_codes, n_resamples, confidence, seed)


def per_class_table(labels: np.ndarray, predicted: np.ndarray, classnames: Sequence[str]) -> pd.DataFrame:
    """Per class: its images, how many were predicted right (top-1), its recall, and how often it was predicted.

    Returns:
        One row per class in label order: ``label``, ``classname``, ``n_images``, ``n_correct``, ``recall``
        (NaN for a class without images) and ``n_predicted`` (images of any class given this one).
    """
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    n_classes = len(classnames)
    n_images = np.bincount(labels, minlength=n_classes)
    n_correct = np.bincount(labels[labels == predicted], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_images > 0, n_correct / np.maximum(n_images, 1), np.nan)
    return pd.DataFrame({"label": np.arange(n_classes), "classname": list(classnames), "n_images": n_images,
                         "n_correct": n_correct, "recall": recall,
                         "n_predicted": np.bincount(predicted, minlength=n_classes)})


def worst_classes(per_class: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` classes with images of lowest recall (ties: more images first, then label order)."""
    ranked = per_class[per_class["n_images"] > 0]
    return ranked.sort_values(["recall", "n_images", "label"], ascending=[True, False, True],
                              kind="stable").head(n).reset_index(drop=True)


def confusion_table(labels: np.ndarray, predicted: np.ndarray, classnames: Sequence[str]) -> pd.DataFrame:
    """The confusion matrix as a long table of its non-zero cells.

    Returns:
        One row per (true class, predicted class) pair that occurs, by true then predicted label: ``label``,
        ``classname``, ``predicted``, ``predicted_name``, ``n_images``. Long, not square: ImageNet's
        1,000 x 1,000 matrix has at most 50,000 non-zero cells; ``pivot`` gives the square one.
    """
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    pairs, counts = np.unique(np.stack([labels, predicted], axis=1).reshape(-1, 2), axis=0, return_counts=True)
    names = np.asarray(classnames, dtype=object)
    return pd.DataFrame({"label": pairs[:, 0], "classname": names[pairs[:, 0]], "predicted": pairs[:, 1],
                         "predicted_name": names[pairs[:, 1]], "n_images": counts})
