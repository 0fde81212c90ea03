"""Bootstrap confidence intervals over queries (percentile method), plain and paired.

Each resample draws n queries with replacement from the n evaluated queries (a seeded
``numpy.random.Generator``, so a seed reproduces the interval exactly) and recomputes the
statistic; the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
of the resampled statistics. NaN values (queries without a relevant item) are left out first.
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
    """A statistic over queries with its bootstrap confidence interval.

    Attributes:
        estimate: the statistic on all evaluated queries.
        low: lower bound of the interval.
        high: upper bound of the interval.
        n: queries used (NaN values left out).
        n_resamples: bootstrap resamples drawn.
        confidence: the interval's nominal coverage, e.g. 0.95.
    """

    estimate: float
    low: float
    high: float
    n: int
    n_resamples: int
    confidence: float


@dataclass(frozen=True)
class PairedDifference:
    """The difference ``statistic(a) - statistic(b)`` over the same queries, bootstrapped in pairs.

    Attributes:
        difference: the difference on all queries evaluated under both (for the mean: the mean
            per-query difference).
        low: lower bound of the interval for the difference.
        high: upper bound of the interval for the difference.
        fraction_not_positive: share of resamples where the difference is <= 0, a one-sided
            p-value-like measure of the evidence that ``a`` is better than ``b``.
        n: queries used (queries with NaN under either left out).
        n_resamples: bootstrap resamples drawn.
        confidence: the interval's nominal coverage.
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
    """Bootstrap confidence interval of a per-query metric's statistic.

    Args:
        values: one value per query (e.g. reciprocal ranks); NaN values are left out.
        statistic: reduces an array along ``axis=1`` (``np.mean``, ``np.median``).
        n_resamples: number of bootstrap resamples.
        confidence: nominal coverage of the interval, in (0, 1).
        seed: seed of the ``numpy.random.Generator`` drawing the resamples.

    Returns:
        The estimate and interval; all NaN when no value is left.
    """
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
    """Paired bootstrap of ``statistic(a) - statistic(b)`` for two checkpoints on the same queries.

    Every resample draws the same queries for both, so per-query difficulty cancels out.

    Args:
        values_a: per-query metric under checkpoint a.
        values_b: the same metric, same queries in the same order, under checkpoint b.
        statistic: reduces an array along ``axis=1`` (``np.mean``, ``np.median``).
        n_resamples: number of bootstrap resamples.
        confidence: nominal coverage of the interval, in (0, 1).
        seed: seed of the ``numpy.random.Generator`` drawing the resamples.

    Returns:
        The difference, its interval and the share of resamples with difference <= 0; all NaN
        when no query is evaluated under both.

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
    """Bootstrap intervals for every summary metric of a per-query table.

    Args:
        table: the output of :func:`clipeval.metrics.retrieval.per_query_metrics`.
        ks: the cut-offs (columns ``hit_rate@k``/``recall@k`` must exist for each).
        n_resamples: number of bootstrap resamples.
        confidence: nominal coverage of the intervals.
        seed: seed of the resamples (the same for every metric, so the metrics of one
            resample come from the same queries).

    Returns:
        One row per metric, in the order of ``summarize_ranks``: ``metric``, ``estimate``,
        ``ci_low``, ``ci_high``, ``n_queries``, ``n_resamples``, ``confidence``. The
        estimates equal :func:`clipeval.metrics.retrieval.summarize_ranks`.
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
