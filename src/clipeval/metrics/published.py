"""Measured retrieval metrics against published numbers: does the harness reproduce what is known?

Harness bugs are common and silent (a wrong preprocessing, text padding or split moves retrieval by 10-20
points), so every measured HitRate@k is put beside the catalogue's published value and flagged by
:data:`DEVIATION_RULE`. docs/retrieval.md ("Published numbers and the deviation flag") gives the rule, its
tolerance and the bugs it is for. Without a CI (NaN) only the rule's first condition is used.
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
    """Measured HitRate@k (``metrics.csv``'s rows, fractions) beside the published values (percent,
    :func:`clipeval.models.catalogue.published_retrieval`), each flagged by :data:`DEVIATION_RULE`.

    Returns:
        One row per metrics row (:data:`COMPARISON_COLUMNS`), in percent, with ``status`` (``within
        tolerance``, ``DEVIATES`` or ``no published number``) and, for flagged rows, a ``hint`` at the usual
        causes.

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
    """Why a run (its checkpoints, the profile's benchmarks) has no measured-vs-published comparison, or None."""
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
