"""Retrieval metrics as pure functions of a (queries, items) score matrix and a boolean relevance matrix of the
same shape; a query may have several relevant items, or none. docs/retrieval.md ("Metrics") defines each metric
and its chance level.

Everything is computed from one representation, each query's sorted 1-based ranks of its relevant items
(:func:`relevant_ranks`), under one deterministic tie rule: among equal scores the lower item index ranks first::

    rank(q, i) = 1 + #{j : scores[q, j] > scores[q, i]} + #{j < i : scores[q, j] == scores[q, i]}

A query with no relevant item gets NaN for every metric, is left out of every mean and counted in
``n_queries_without_relevant``; it never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

DIRECTIONS = ("text_to_image", "image_to_text")

_PAIR_CHUNK_ELEMENTS = 4_000_000  # relevant pairs x items compared at once in relevant_ranks


def relevant_ranks(scores: np.ndarray, relevance: np.ndarray) -> list[np.ndarray]:
    """Each query's sorted 1-based ranks of its relevant items (empty when it has none), with the module's tie rule.

    Raises:
        ValueError: shapes differ, the arrays are not 2-D, or a score is not finite.
    """
    scores, relevance = _check_matrices(scores, relevance)
    n_queries, n_items = scores.shape
    if n_queries == 0:
        return []
    query_of_pair, item_of_pair = np.nonzero(relevance)  # row-major: sorted by query, then item
    ranks = np.empty(len(query_of_pair), dtype=np.int64)
    chunk = max(1, _PAIR_CHUNK_ELEMENTS // max(n_items, 1))
    columns = np.arange(n_items)
    for start in range(0, len(query_of_pair), chunk):
        q = query_of_pair[start:start + chunk]
        i = item_of_pair[start:start + chunk]
        rows = scores[q]
        own = scores[q, i][:, None]
        higher = (rows > own).sum(axis=1)
        tied_before = ((rows == own) & (columns[None, :] < i[:, None])).sum(axis=1)
        ranks[start:start + chunk] = 1 + higher + tied_before
    bounds = np.cumsum(np.bincount(query_of_pair, minlength=n_queries))[:-1]
    return [np.sort(r) for r in np.split(ranks, bounds)]


def first_rank(ranks: np.ndarray) -> float:
    """The rank of the best-ranked relevant item, ``min(ranks)``; NaN with no relevant item."""
    return float(np.min(ranks)) if len(ranks) else float("nan")


def reciprocal_rank(ranks: np.ndarray) -> float:
    """``1 / first_rank``: 1.0 when a relevant item is ranked first; NaN with no relevant item."""
    return 1.0 / first_rank(ranks)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """1.0 if at least one relevant item is in the top ``k`` (``first_rank <= k``), else 0.0; NaN with none.

    This is what the CLIP paper and CLIP_benchmark call "recall@k" (``positive_pairs[query, topk].any()``).
    """
    return float(np.any(ranks <= k)) if len(ranks) else float("nan")


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """The fraction of the query's relevant items ranked in the top ``k``; NaN with none."""
    # HitRate@k vs Recall@k: they agree when a query has exactly one relevant item. With m
    # relevant items HitRate@k is 1 as soon as one of them is in the top k, while Recall@k
    # is only 1 when all m are (and can never exceed k / m).
    return float(np.mean(ranks <= k)) if len(ranks) else float("nan")


def per_query_metrics(ranks: Sequence[np.ndarray], ks: Sequence[int] = (1, 5, 10)) -> pd.DataFrame:
    """One row per query (``query``): ``n_relevant``, ``first_rank``, ``reciprocal_rank``, ``hit_rate@{k}`` and
    ``recall@{k}``, for best/worst-query views and the bootstrap."""
    ks = _check_ks(ks)
    table = {
        "n_relevant": [len(r) for r in ranks],
        "first_rank": [first_rank(r) for r in ranks],
        "reciprocal_rank": [reciprocal_rank(r) for r in ranks],
    }
    for k in ks:
        table[f"hit_rate@{k}"] = [hit_rate_at_k(r, k) for r in ranks]
        table[f"recall@{k}"] = [recall_at_k(r, k) for r in ranks]
    frame = pd.DataFrame(table, index=pd.RangeIndex(len(ranks), name="query"))
    return frame.astype({"n_relevant": "int64"}).astype(dict.fromkeys(frame.columns[1:], "float64"))


def summary_statistics(ks: Sequence[int] = (1, 5, 10)) -> dict[str, tuple[str, Callable]]:
    """How each summary metric comes from the per-query table: ``{summary key: (per-query column, np.mean or
    np.median)}``, applied over the queries that have a relevant item."""
    ks = _check_ks(ks)
    stats: dict[str, tuple[str, Callable]] = {f"hit_rate@{k}": (f"hit_rate@{k}", np.mean) for k in ks}
    stats.update({f"recall@{k}": (f"recall@{k}", np.mean) for k in ks})
    stats["mrr"] = ("reciprocal_rank", np.mean)
    stats["median_rank"] = ("first_rank", np.median)
    stats["mean_rank"] = ("first_rank", np.mean)
    return stats


def summarize_ranks(ranks: Sequence[np.ndarray], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Average the per-query metrics over the queries that have a relevant item (:func:`summary_statistics`).

    ``n_queries`` counts the queries averaged, ``n_queries_without_relevant`` those left out; the metrics are
    NaN when no query has a relevant item.
    """
    table = per_query_metrics(ranks, ks)
    evaluated = table[table["n_relevant"] > 0]
    summary = {
        key: float(statistic(evaluated[column].to_numpy())) if len(evaluated) else float("nan")
        for key, (column, statistic) in summary_statistics(ks).items()
    }
    summary["n_queries"] = len(evaluated)
    summary["n_queries_without_relevant"] = len(table) - len(evaluated)
    return summary


def summarize(scores: np.ndarray, relevance: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Rank, then summarize: ``summarize_ranks(relevant_ranks(scores, relevance), ks)``."""
    return summarize_ranks(relevant_ranks(scores, relevance), ks)


def chance_levels(n_relevant: Sequence[int] | np.ndarray, n_items: int,
                  ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """The exact value of each summary metric under a uniformly random ranking of ``n_items`` items with the same
    relevance (the formulas: docs/retrieval.md, "Chance level").

    ``S(j) = C(N-r, j) / C(N, j)`` is the chance that none of a query's top ``j`` is relevant, and its first
    relevant rank is ``j`` with probability ``S(j-1) - S(j)``. Each metric is the expectation per query,
    averaged over the queries with a relevant item (as the metrics are); ``median_rank`` is the smallest ``m``
    with ``mean(1 - S(m)) >= 1/2``, what the median of a large random run approaches.

    Raises:
        ValueError: a query has more relevant items than there are items.
    """
    ks = _check_ks(ks)
    counts = pd.Series(np.asarray(n_relevant, dtype=np.int64)).value_counts()
    counts = counts[counts.index > 0]
    if counts.empty:
        return {key: float("nan") for key in summary_statistics(ks)}
    if counts.index.max() > n_items:
        raise ValueError(f"a query has {counts.index.max()} relevant items but only {n_items} items are ranked")
    weights = counts.to_numpy() / counts.sum()
    step = np.arange(n_items)
    # survival[a, j] = S(j) for the a-th distinct r: the top j items are all irrelevant
    survival = np.array([np.concatenate([[1.0], np.cumprod(np.clip(n_items - r - step, 0, None) / (n_items - step))])
                         for r in counts.index])
    first = survival[:, :-1] - survival[:, 1:]  # first[a, j - 1] = P(first relevant at rank j)
    ranks = np.arange(1, n_items + 1)
    levels = {f"hit_rate@{k}": float(weights @ (1.0 - survival[:, min(k, n_items)])) for k in ks}
    levels.update({f"recall@{k}": min(k, n_items) / n_items for k in ks})
    levels["mrr"] = float(weights @ (first @ (1.0 / ranks)))
    pooled = weights @ (1.0 - survival[:, 1:])  # pooled[j - 1] = mean over queries of P(first <= j)
    levels["median_rank"] = float(ranks[np.argmax(pooled >= 0.5 - 1e-12)])
    levels["mean_rank"] = float(weights @ (first @ ranks))
    return {key: levels[key] for key in summary_statistics(ks)}


def rank_both_directions(scores: np.ndarray, relevance: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Relevant ranks for ``text_to_image`` (per caption) and ``image_to_text`` (per image, the transpose) from
    one (captions, images) matrix."""
    scores, relevance = _check_matrices(scores, relevance)
    return {
        "text_to_image": relevant_ranks(scores, relevance),
        "image_to_text": relevant_ranks(scores.T, relevance.T),
    }


def summarize_both_directions(scores: np.ndarray, relevance: np.ndarray,
                              ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """:func:`summarize_ranks` for both directions of one (captions, images) score matrix."""
    return {direction: summarize_ranks(ranks, ks)
            for direction, ranks in rank_both_directions(scores, relevance).items()}


def _check_matrices(scores: np.ndarray, relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    relevance = np.asarray(relevance, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevance.shape:
        raise ValueError(f"scores {scores.shape} and relevance {relevance.shape} must be 2-D "
                         "matrices of the same (queries, items) shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return scores, relevance


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def hit_rate_curve(per_query: pd.DataFrame, max_k: int = 50) -> pd.DataFrame:
    """HitRate@k for k = 1..max_k per checkpoint and direction, from each query's first relevant rank.

    With an ``n_items`` column (as :func:`clipeval.eval.retrieval.evaluate_retrieval` writes),
    a ``chance`` column holds HitRate@k under a random ranking (:func:`chance_levels`).
    """
    rows = []
    for (spec, direction), group in per_query.groupby(["checkpoint", "direction"], sort=False):
        first = group["first_rank"].dropna().to_numpy()
        chance = (chance_levels(group["n_relevant"], int(group["n_items"].iloc[0]), range(1, max_k + 1))
                  if "n_items" in group else {})
        for k in range(1, max_k + 1):
            rows.append({"checkpoint": spec, "direction": direction, "k": k,
                         "hit_rate": float(np.mean(first <= k)) if len(first) else np.nan,
                         "chance": chance.get(f"hit_rate@{k}", np.nan)})
    return pd.DataFrame(rows)
