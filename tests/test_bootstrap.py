"""Bootstrap intervals over queries: reproducible, sensible, NaN-aware."""

from __future__ import annotations

import numpy as np
import pytest

from clipeval.metrics.bootstrap import bootstrap_ci, bootstrap_summary, paired_bootstrap
from clipeval.metrics.retrieval import per_query_metrics, summarize_ranks


def per_query_values(seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.random(n) < 0.6).astype(float)
    values[rng.choice(n, size=20, replace=False)] = np.nan  # queries without a relevant item
    return values


def test_reproducible_for_a_seed_and_varies_across_seeds():
    values = per_query_values(0)
    first, again = bootstrap_ci(values, seed=3), bootstrap_ci(values, seed=3)
    assert first == again
    assert bootstrap_ci(values, seed=4) != first


def test_interval_contains_the_estimate_and_ignores_nan():
    values = per_query_values(1)
    interval = bootstrap_ci(values, n_resamples=500, seed=0)
    kept = values[~np.isnan(values)]
    assert interval.n == len(kept) == 280
    assert interval.estimate == pytest.approx(kept.mean())
    assert interval.low <= interval.estimate <= interval.high
    # Roughly the normal-theory width: 2 * 1.96 * sd / sqrt(n).
    expected_width = 2 * 1.96 * kept.std() / np.sqrt(len(kept))
    assert 0.7 * expected_width < interval.high - interval.low < 1.3 * expected_width
    narrower = bootstrap_ci(values, n_resamples=500, confidence=0.5, seed=0)
    assert interval.low <= narrower.low <= narrower.high <= interval.high


def test_median_statistic_and_empty_input():
    ranks = np.array([1, 2, 2, 3, 50, 7, 1, 1, 4, 9], dtype=float)
    interval = bootstrap_ci(ranks, statistic=np.median, n_resamples=200, seed=0)
    assert interval.estimate == 2.5 and interval.low <= 2.5 <= interval.high
    empty = bootstrap_ci([np.nan, np.nan])
    assert empty.n == 0 and np.isnan(empty.estimate) and np.isnan(empty.low)


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    a = (rng.random(400) < 0.7).astype(float)
    b = a.copy()
    b[rng.choice(400, size=60, replace=False)] = 0.0  # b is worse on some queries, never better
    b[5] = np.nan  # a query that b could not evaluate is left out of both
    result = paired_bootstrap(a, b, n_resamples=500, seed=1)
    keep = ~np.isnan(b)
    assert result.n == 399
    assert result.difference == pytest.approx(a[keep].mean() - b[keep].mean())
    assert 0 < result.low <= result.difference <= result.high
    assert result.fraction_not_positive == 0.0
    assert paired_bootstrap(a, b, n_resamples=500, seed=1) == result

    same = paired_bootstrap(a, a, n_resamples=100, seed=0)
    assert same.difference == 0 and same.fraction_not_positive == 1.0
    reversed_ = paired_bootstrap(b, a, n_resamples=500, seed=1)
    assert reversed_.difference == pytest.approx(-result.difference)
    assert reversed_.fraction_not_positive == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:-1])


def test_bootstrap_summary_estimates_equal_summarize_ranks():
    rng = np.random.default_rng(4)
    ranks = [np.sort(rng.choice(50, size=rng.integers(0, 4), replace=False) + 1) for _ in range(120)]
    table = per_query_metrics(ranks, ks=(1, 5))
    summary = bootstrap_summary(table, ks=(1, 5), n_resamples=200, seed=0)
    expected = summarize_ranks(ranks, ks=(1, 5))
    assert summary["metric"].tolist() == [key for key in expected if not key.startswith("n_queries")]
    for row in summary.itertuples():
        assert row.estimate == pytest.approx(expected[row.metric])
        assert row.ci_low <= row.estimate <= row.ci_high
        assert row.n_queries == expected["n_queries"]
    assert summary.equals(bootstrap_summary(table, ks=(1, 5), n_resamples=200, seed=0))


@pytest.mark.parametrize("options", [{"n_resamples": 0}, {"confidence": 1.0}, {"confidence": 0.0}])
def test_invalid_options_raise(options):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **options)
