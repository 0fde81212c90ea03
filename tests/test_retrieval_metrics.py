"""Retrieval metrics against a brute-force reference and a case worked out by hand."""

from __future__ import annotations

import itertools
import statistics
from math import comb

import numpy as np
import pytest
import torch

from clipeval.metrics.retrieval import (
    chance_levels,
    hit_rate_at_k,
    per_query_metrics,
    rank_both_directions,
    recall_at_k,
    reciprocal_rank,
    relevant_ranks,
    summarize,
    summarize_both_directions,
    summarize_ranks,
)

KS = (1, 2, 3, 5, 10)


def brute_force_summary(scores: np.ndarray, relevance: np.ndarray, ks=KS) -> dict[str, float]:
    """Every metric with plain loops over a stable argsort (lower index first among ties)."""
    per_query = []
    without = 0
    for q in range(scores.shape[0]):
        order = np.argsort(-scores[q], kind="stable")
        n_relevant = int(relevance[q].sum())
        if n_relevant == 0:
            without += 1
            continue
        first = next(position + 1 for position, item in enumerate(order) if relevance[q, item])
        row = {"first": first}
        for k in ks:
            found = sum(bool(relevance[q, item]) for item in order[:k])
            row[f"hit_rate@{k}"] = 1.0 if found > 0 else 0.0
            row[f"recall@{k}"] = found / n_relevant
        per_query.append(row)
    summary = {key: sum(row[key] for row in per_query) / len(per_query)
               for key in [f"hit_rate@{k}" for k in ks] + [f"recall@{k}" for k in ks]}
    firsts = [row["first"] for row in per_query]
    summary["mrr"] = sum(1 / f for f in firsts) / len(firsts)
    summary["median_rank"] = float(statistics.median(firsts))
    summary["mean_rank"] = sum(firsts) / len(firsts)
    summary["n_queries"] = len(per_query)
    summary["n_queries_without_relevant"] = without
    return summary


def brute_force_ranks(scores: np.ndarray, relevance: np.ndarray) -> list[list[int]]:
    ranks = []
    for q in range(scores.shape[0]):
        order = np.argsort(-scores[q], kind="stable")
        ranks.append(sorted(position + 1 for position, item in enumerate(order) if relevance[q, item]))
    return ranks


def random_case(seed: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded scores (quantised to few values when ``tied``) and multi-relevant relevance with
    some queries that have no relevant item."""
    rng = np.random.default_rng(seed)
    n_queries, n_items = 40, 30
    scores = rng.integers(0, 6, (n_queries, n_items)).astype(np.float32) / 5 if tied \
        else rng.standard_normal((n_queries, n_items))
    n_relevant = rng.choice([0, 1, 1, 2, 5], size=n_queries)
    relevance = np.zeros((n_queries, n_items), dtype=bool)
    for q, m in enumerate(n_relevant):
        relevance[q, rng.choice(n_items, size=m, replace=False)] = True
    return scores, relevance


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tied", [False, True])
def test_metrics_match_brute_force(seed, tied):
    scores, relevance = random_case(seed, tied)
    assert (relevance.sum(axis=1) == 0).any() and (relevance.sum(axis=1) > 1).any()

    ranks = relevant_ranks(scores, relevance)
    assert [r.tolist() for r in ranks] == brute_force_ranks(scores, relevance)

    summary = summarize(scores, relevance, KS)
    expected = brute_force_summary(scores, relevance, KS)
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-12), key


def test_summary_keys_are_exactly_the_documented_ones():
    scores, relevance = random_case(0, tied=False)
    assert list(summarize(scores, relevance, ks=(1, 5))) == [
        "hit_rate@1", "hit_rate@5", "recall@1", "recall@5", "mrr", "median_rank", "mean_rank",
        "n_queries", "n_queries_without_relevant"]


def test_tie_rule_lower_index_first():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    relevance = np.array([[True, True, True, True, True]])
    # order: item 1 (0.9), item 3 (0.9), item 0 (0.5), item 2 (0.5), item 4 (0.1)
    assert relevant_ranks(scores, relevance)[0].tolist() == [1, 2, 3, 4, 5]
    only_item_2 = np.array([[False, False, True, False, False]])
    assert relevant_ranks(scores, only_item_2)[0].tolist() == [4]  # 2 higher + item 0 tied before


def test_queries_without_relevant_are_counted_not_fatal():
    scores, relevance = random_case(1, tied=False)
    relevance[:] = False
    summary = summarize(scores, relevance)
    assert summary["n_queries"] == 0
    assert summary["n_queries_without_relevant"] == scores.shape[0]
    assert np.isnan(summary["mrr"]) and np.isnan(summary["hit_rate@1"])

    table = per_query_metrics(relevant_ranks(scores, relevance))
    assert table["first_rank"].isna().all() and (table["n_relevant"] == 0).all()
    assert np.isnan(reciprocal_rank(np.array([], dtype=np.int64)))
    assert summarize_ranks([])["n_queries"] == 0


def test_per_query_table():
    ranks = [np.array([1, 3]), np.array([], dtype=np.int64), np.array([7])]
    table = per_query_metrics(ranks, ks=(1, 5))
    assert list(table.columns) == ["n_relevant", "first_rank", "reciprocal_rank",
                                   "hit_rate@1", "recall@1", "hit_rate@5", "recall@5"]
    assert table["n_relevant"].tolist() == [2, 0, 1]
    assert table.loc[0].drop("n_relevant").tolist() == [1.0, 1.0, 1.0, 0.5, 1.0, 1.0]
    assert table.loc[1].drop("n_relevant").isna().all()
    assert table.loc[2].drop("n_relevant").tolist() == pytest.approx([7.0, 1 / 7, 0.0, 0.0, 0.0, 0.0])


def test_both_directions_use_the_transpose():
    scores, relevance = random_case(2, tied=True)
    both = summarize_both_directions(scores, relevance)
    assert both["text_to_image"] == summarize(scores, relevance)
    assert both["image_to_text"] == summarize(scores.T, relevance.T)
    ranks = rank_both_directions(scores, relevance)
    assert len(ranks["text_to_image"]) == scores.shape[0] and len(ranks["image_to_text"]) == scores.shape[1]


def clip_benchmark_recall_at_k(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> float:
    """CLIP_benchmark's definition (clip_benchmark/metrics/zeroshot_retrieval.py): for each query
    take the top-k item indices; the query scores 1 if any of them is a positive pair; average."""
    topk = torch.topk(scores, k, dim=1).indices
    per_query = positive_pairs.gather(1, topk).any(dim=1)
    return per_query.float().mean().item()


def test_hit_rate_is_clip_benchmark_recall_worked_by_hand():
    # Two text queries, four images, no ties.
    scores = np.array([[0.9, 0.1, 0.8, 0.3],    # query 0: order 0, 2, 3, 1; relevant {0, 3} -> ranks 1, 3
                       [0.2, 0.7, 0.6, 0.5]])   # query 1: order 1, 2, 3, 0; relevant {3}    -> rank 3
    relevance = np.array([[True, False, False, True],
                          [False, False, False, True]])
    ranks = relevant_ranks(scores, relevance)
    assert [r.tolist() for r in ranks] == [[1, 3], [3]]

    # By hand:         k=1            k=2            k=3
    # HitRate q0:      1              1              1
    # HitRate q1:      0              0              1
    #   mean:          0.5            0.5            1.0
    # Recall  q0:      1/2            1/2            2/2
    # Recall  q1:      0              0              1
    #   mean:          0.25           0.25           1.0
    hand_hit_rate = {1: 0.5, 2: 0.5, 3: 1.0}
    hand_recall = {1: 0.25, 2: 0.25, 3: 1.0}
    summary = summarize(scores, relevance, ks=(1, 2, 3))
    for k in (1, 2, 3):
        clip_benchmark = clip_benchmark_recall_at_k(torch.tensor(scores), torch.tensor(relevance), k)
        assert clip_benchmark == pytest.approx(hand_hit_rate[k])
        assert summary[f"hit_rate@{k}"] == pytest.approx(hand_hit_rate[k])
        assert summary[f"recall@{k}"] == pytest.approx(hand_recall[k])
    # Recall@k differs from HitRate@k only because query 0 has two relevant images.
    assert summary["recall@1"] != summary["hit_rate@1"]
    assert summary["mrr"] == pytest.approx((1 / 1 + 1 / 3) / 2)
    assert summary["median_rank"] == 2.0 and summary["mean_rank"] == 2.0
    assert hit_rate_at_k(ranks[0], 1) == 1.0 and recall_at_k(ranks[0], 1) == 0.5


def test_clip_benchmark_definition_agrees_on_random_untied_scores():
    scores, relevance = random_case(3, tied=False)
    has_relevant = relevance.any(axis=1)
    scores, relevance = scores[has_relevant], relevance[has_relevant]
    summary = summarize(scores, relevance, KS)
    for k in KS:
        expected = clip_benchmark_recall_at_k(torch.tensor(scores), torch.tensor(relevance), k)
        assert summary[f"hit_rate@{k}"] == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["shape", "nan", "ks"])
def test_invalid_inputs_raise(bad):
    scores, relevance = random_case(0, tied=False)
    with pytest.raises(ValueError):
        if bad == "shape":
            summarize(scores, relevance[:, :-1])
        elif bad == "nan":
            scores[0, 0] = np.nan
            summarize(scores, relevance)
        else:
            summarize(scores, relevance, ks=(0,))


def test_chance_levels_exact_over_every_permutation():
    """N = 6 items: every one of the 720 orders, for queries with 1, 2, 3 and 6 relevant items."""
    n_items, n_relevant, ks = 6, [1, 2, 2, 3, 6], (1, 2, 4, 6, 10)
    first_ranks, sums = [], None
    for order in itertools.permutations(range(n_items)):
        scores = np.tile(-np.asarray(order, dtype=float), (len(n_relevant), 1))  # item order[0] ranked first
        relevance = np.arange(n_items)[None, :] < np.asarray(n_relevant)[:, None]
        ranks = relevant_ranks(scores, relevance)
        summary = summarize_ranks(ranks, ks)
        first_ranks += [r[0] for r in ranks]
        sums = summary if sums is None else {key: sums[key] + summary[key] for key in sums}
    chance = chance_levels(n_relevant, n_items, ks)
    for key, value in chance.items():
        if key != "median_rank":
            assert value == pytest.approx(sums[key] / 720, abs=1e-12), key
    assert chance["median_rank"] == sorted(first_ranks)[(len(first_ranks) - 1) // 2]  # lower median, pooled
    assert chance["hit_rate@2"] == pytest.approx(np.mean([1 - comb(6 - r, 2) / comb(6, 2) for r in n_relevant]))
    assert chance["mean_rank"] == pytest.approx(np.mean([7 / (r + 1) for r in n_relevant]))


def test_chance_levels_against_simulated_random_rankings():
    """A larger case by simulation: 400 seeded runs of uniformly random scores.

    Each metric's simulated mean has a standard error s / sqrt(400) (s: its spread over runs);
    4 standard errors is a two-sided tolerance a correct formula passes with probability
    > 0.9999, while a wrong one (e.g. recall@k = r k / N, or MRR = 1 / E[rank]) misses by far more.
    """
    rng = np.random.default_rng(0)
    n_items, ks = 40, (1, 5, 10)
    n_relevant = rng.choice([0, 1, 1, 2, 3, 8, 40], size=60)
    relevance = np.zeros((60, n_items), dtype=bool)
    for q, r in enumerate(n_relevant):
        relevance[q, rng.choice(n_items, r, replace=False)] = True
    runs = [summarize(rng.random((60, n_items)), relevance, ks) for _ in range(400)]
    chance = chance_levels(n_relevant, n_items, ks)
    for key in chance:
        if key == "median_rank":
            continue
        values = np.array([run[key] for run in runs])
        assert abs(values.mean() - chance[key]) <= 4 * values.std() / np.sqrt(len(values)) + 1e-12, key
    pooled = np.sort(np.concatenate([[rank[0] for rank in relevant_ranks(rng.random((60, n_items)), relevance)
                                      if len(rank)] for _ in range(400)]))
    assert chance["median_rank"] == pooled[(len(pooled) - 1) // 2]


def test_chance_levels_leave_out_queries_without_relevant_items():
    assert chance_levels([0, 1], 10, (1,)) == chance_levels([1], 10, (1,))
    assert np.isnan(chance_levels([0, 0], 10, (1,))["mrr"])
    with pytest.raises(ValueError, match="relevant items but only"):
        chance_levels([11], 10, (1,))
