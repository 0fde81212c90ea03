"""Measured retrieval metrics against published numbers: does the harness reproduce what is known?

Harness bugs are common and silent: wrong image preprocessing or text padding moves retrieval by
10-20 points (open_clip #1074: SigLIP2 Flickr R@1 64.6 measured vs 85.5 reported), so does
caption multiplicity (CLIP_benchmark #7: R@5 of 50% vs 90%) or the wrong split (CLIP_benchmark
#48). :func:`compare_with_published` puts every measured HitRate@k of ``metrics.csv`` beside the
catalogue's published value (:func:`clipeval.models.catalogue.published_retrieval`) and flags a
deviation by :data:`DEVIATION_RULE`.

The rule, with ``m`` the measured HitRate@k, ``[lo, hi]`` its 95% bootstrap CI and ``p`` the
published value (all in percent) and ``t`` the tolerance (default :data:`DEFAULT_TOLERANCE` = 2
points): a row **deviates** when ``|m - p| > t`` **and** ``p`` lies outside ``[lo - t, hi + t]``.
The CI absorbs the sampling noise of the queries (by the binomial approximation about ±0.6 points
at COCO 5k text->image R@1, 25,000 queries, and ±2.5 at Flickr 1k image->text R@1, 1,000 queries);
the tolerance absorbs what may legitimately differ between two harnesses measuring the same
weights (the resize implementation, fp16 vs fp32). The bugs this is for move numbers by 10 points
and more, far beyond both. Without a CI (NaN) only the first condition is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DEFAULT_TOLERANCE = 2.0  # points of HitRate@k (percent)
DEVIATION_RULE = ("deviates when |measured - published| > tolerance and the published value lies outside "
                  "the measured 95% bootstrap CI widened by the tolerance on each side")
HINT_BELOW = ("measured below published: check image preprocessing (resize, crop, interpolation, mean/std), "
              "text padding and truncation (SigLIP pads to its max length), precision (fp16/bf16), caption "
              "multiplicity (image->text counts a hit for any of the image's 5 captions)")
HINT_ABOVE = ("measured above published: check the split (Karpathy test, not val or a smaller set: fewer images "
              "make retrieval easier) and caption multiplicity (one query per caption, relevant to its own image)")
STATUS_OK, STATUS_DEVIATES, STATUS_NONE = "within tolerance", "DEVIATES", "no published number"
COMPARISON_COLUMNS = ["checkpoint", "dataset", "direction", "k", "measured", "ci_low", "ci_high", "published",
                      "difference", "tolerance", "flagged", "status", "hint", "source"]


def compare_with_published(metrics: pd.DataFrame, published: pd.DataFrame,
                           tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """Measured HitRate@k beside the published values, each flagged by :data:`DEVIATION_RULE`.

    Args:
        metrics: rows of ``metrics.csv`` (:attr:`clipeval.eval.retrieval.RetrievalReport.metrics`):
            ``checkpoint``, ``dataset``, ``direction``, ``k``, ``hit_rate``, ``hit_rate_ci_low``,
            ``hit_rate_ci_high`` (fractions in [0, 1]).
        published: ``checkpoint``, ``dataset``, ``direction``, ``k``, ``published`` (percent)
            and ``source`` (:func:`clipeval.models.catalogue.published_retrieval`).
        tolerance: points (of percent) allowed beyond the CI.

    Returns:
        One row per metrics row (:data:`COMPARISON_COLUMNS`), in percent: ``measured``, its CI,
        ``published`` (NaN when nothing is published), ``difference`` (measured - published),
        ``flagged``, ``status`` (``within tolerance``, ``DEVIATES`` or ``no published number``)
        and, for flagged rows, a ``hint`` at the usual causes.

    Raises:
        ValueError: a negative tolerance, or ``metrics`` lacking a column.
    """
    if tolerance < 0:
        raise ValueError(f"the tolerance is a number of points >= 0, not {tolerance}")
    keys = ["checkpoint", "dataset", "direction", "k"]
    needed = [*keys, "hit_rate", "hit_rate_ci_low", "hit_rate_ci_high"]
    missing = [column for column in needed if column not in metrics]
    if missing:
        raise ValueError(f"metrics lack column(s) {missing}; pass the rows of metrics.csv")
    measured = metrics[needed].rename(columns={"hit_rate": "measured", "hit_rate_ci_low": "ci_low",
                                               "hit_rate_ci_high": "ci_high"})
    measured[["measured", "ci_low", "ci_high"]] = measured[["measured", "ci_low", "ci_high"]].astype(float) * 100
    measured["k"] = measured["k"].astype(int)
    reference = published[[*keys, "published", "source"]].astype({"k": int})
    table = measured.merge(reference, on=keys, how="left", validate="many_to_one")
    table["difference"] = table["measured"] - table["published"]
    table["tolerance"] = float(tolerance)
    table["flagged"] = deviates(table["measured"], table["ci_low"], table["ci_high"], table["published"], tolerance)
    has_number = table["published"].notna()
    table["status"] = np.where(~has_number, STATUS_NONE, np.where(table["flagged"], STATUS_DEVIATES, STATUS_OK))
    table["hint"] = np.where(table["flagged"], np.where(table["difference"] < 0, HINT_BELOW, HINT_ABOVE), "")
    table["source"] = table["source"].fillna("")
    return table[COMPARISON_COLUMNS].reset_index(drop=True)


def deviates(measured, ci_low, ci_high, published, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """:data:`DEVIATION_RULE` element-wise (all in percent); False where nothing is published."""
    measured, published = np.asarray(measured, float), np.asarray(published, float)
    low, high = np.asarray(ci_low, float), np.asarray(ci_high, float)
    far = np.abs(measured - published) > tolerance
    outside = (published < low - tolerance) | (published > high + tolerance)
    outside = np.where(np.isnan(low) | np.isnan(high), True, outside)
    return far & outside & ~np.isnan(published)


def nothing_to_compare(checkpoints: Sequence[str], benchmarks: Sequence[str], published: pd.DataFrame) -> str | None:
    """Why a run has no measured-vs-published comparison, or None when it has one.

    Args:
        checkpoints: the run's checkpoint specs.
        benchmarks: the benchmarks the profile names.
        published: the catalogue's published numbers (:func:`clipeval.models.catalogue.published_retrieval`).
    """
    if not benchmarks:
        return ("this profile names no standard benchmark (its `benchmarks` parameter is empty): its checkpoints "
                f"({', '.join(checkpoints)}) are trained here or untrained, and no published retrieval numbers "
                "exist for them; the paper profile runs COCO 5k and Flickr30k 1k against the published numbers")
    mine = published[published["checkpoint"].isin(checkpoints) & published["dataset"].isin(benchmarks)]
    if mine.empty:
        return (f"no checkpoint of this run ({', '.join(checkpoints)}) has published numbers on "
                f"{', '.join(benchmarks)} in the catalogue (clipeval.models.catalogue); the measured numbers "
                "stand alone")
    return None
