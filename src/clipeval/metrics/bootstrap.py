"""Bootstrap confidence intervals over queries (percentile method), plain and paired.

Each resample draws n queries with replacement from the n evaluated queries with a seeded
``numpy.random.Generator``, so a seed reproduces the interval exactly. NaN values (queries without a relevant
item) are left out first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clipeval.metrics.retrieval import summary_statistics

_RESAMPLE_CHUNK_ELEMENTS = 2_000_000  # resamples x queries drawn at once


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic over queries (``estimate``), its interval ``[low, high]`` at ``confidence``, the queries used
    (``n``, NaN values left out) and the resamples drawn."""

    estimate: float
    low: float
    high: float
    n: int
    n_resamples: int
    confidence: float


@dataclass(frozen=True)
class PairedDifference:
    """The difference ``statistic(a) - statistic(b)`` over the same queries, bootstrapped in pairs.

    ``fraction_not_positive`` is the share of resamples where the difference is <= 0: a one-sided p-value-like
    measure of the evidence that ``a`` is better than ``b``. ``n`` leaves out queries NaN under either.
    """

    difference: float
    low: float
    high: float
    fraction_not_positive: float
    n: int
    n_resamples: int
    confidence: float


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: Callable = np.mean, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """Bootstrap confidence interval of ``statistic`` (reducing along ``axis=1``: ``np.mean``, ``np.median``) over
    one value per query; NaN values are left out, and the result is all NaN when none is left."""
    _check_options(n_resamples, confidence)
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return BootstrapInterval(np.nan, np.nan, np.nan, 0, n_resamples, confidence)
    (resampled,) = _resample(np.random.default_rng(seed), [values], statistic, n_resamples)
    low, high = _interval(resampled, confidence)
    return BootstrapInterval(float(statistic(values[None, :], axis=1)[0]), low, high, len(values),
                             n_resamples, confidence)


def paired_bootstrap(values_a: Sequence[float] | np.ndarray, values_b: Sequence[float] | np.ndarray,
                     statistic: Callable = np.mean, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> PairedDifference:
    """Paired bootstrap of ``statistic(a) - statistic(b)`` for two checkpoints on the same queries, in the same
    order: every resample draws the same queries for both, so per-query difficulty cancels out. All NaN when no
    query is evaluated under both.

    Raises:
        ValueError: the two arrays differ in length.
    """
    _check_options(n_resamples, confidence)
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be 1-D arrays of the same length, got {a.shape} and {b.shape}")
    both = ~(np.isnan(a) | np.isnan(b))
    a, b = a[both], b[both]
    if not len(a):
        return PairedDifference(np.nan, np.nan, np.nan, np.nan, 0, n_resamples, confidence)
    resampled_a, resampled_b = _resample(np.random.default_rng(seed), [a, b], statistic, n_resamples)
    differences = resampled_a - resampled_b
    low, high = _interval(differences, confidence)
    difference = float(statistic(a[None, :], axis=1)[0] - statistic(b[None, :], axis=1)[0])
    return PairedDifference(difference, low, high, float(np.mean(differences <= 0)), len(a),
                            n_resamples, confidence)


def bootstrap_summary(table: pd.DataFrame, ks: Sequence[int] = (1, 5, 10), n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Bootstrap intervals for every summary metric of a :func:`~clipeval.metrics.retrieval.per_query_metrics`
    table, one row per metric in ``summarize_ranks``' order (whose estimates these equal).

    One seed serves every metric, so the metrics of one resample come from the same queries.
    """
    rows = []
    for metric, (column, statistic) in summary_statistics(ks).items():
        interval = bootstrap_ci(table[column].to_numpy(), statistic, n_resamples, confidence, seed)
        rows.append({"metric": metric, "estimate": interval.estimate, "ci_low": interval.low,
                     "ci_high": interval.high, "n_queries": interval.n, "n_resamples": n_resamples,
                     "confidence": confidence})
    return pd.DataFrame(rows)


def _resample(rng: np.random.Generator, arrays: list[np.ndarray], statistic: Callable,
              n_resamples: int) -> list[np.ndarray]:
    """The statistic of each array over the same ``n_resamples`` resamples of its positions."""
    n = len(arrays[0])
    chunk = max(1, _RESAMPLE_CHUNK_ELEMENTS // n)
    results = [np.empty(n_resamples) for _ in arrays]
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        positions = rng.integers(0, n, size=(stop - start, n))
        for values, result in zip(arrays, results):
            result[start:stop] = statistic(values[positions], axis=1)
    return results


def _interval(resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _check_options(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}")
