"""Block-wise retrieval equals a full sort of the whole score matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipeval.metrics.ranking import rank_queries, retrieve_both_directions
from clipeval.metrics.retrieval import relevant_ranks, summarize_ranks


def embeddings(rng: np.random.Generator, n: int, dim: int, quantised: bool) -> torch.Tensor:
    """Unit vectors; quantised ones are multiples of 1/2 scaled by 1/2 (dim 4): their dot products
    are exact in float32, so scores tie often and every BLAS call gives the same numbers."""
    if quantised:
        return torch.from_numpy(rng.integers(-1, 2, (n, dim)).astype(np.float32) / 2)
    return torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, dim)).astype(np.float32)), dim=1)


def random_relevance(rng: np.random.Generator, n_queries: int, n_items: int) -> np.ndarray:
    relevance = np.zeros((n_queries, n_items), dtype=bool)
    for q in range(n_queries):
        m = rng.choice([0, 1, 1, 3, min(n_items, 12)])
        relevance[q, rng.choice(n_items, size=m, replace=False)] = True
    return relevance


def full_sort_topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.stack([np.argsort(-row, kind="stable")[:k] for row in scores])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantised", [False, True])
def test_blockwise_equals_full_sort(seed, quantised):
    rng = np.random.default_rng(seed)
    n_queries, n_items = int(rng.integers(20, 70)), int(rng.integers(5, 90))
    dim = 4 if quantised else 16
    queries, items = embeddings(rng, n_queries, dim, quantised), embeddings(rng, n_items, dim, quantised)
    relevance = random_relevance(rng, n_queries, n_items)
    k = int(rng.integers(1, 12))
    result = rank_queries(queries, items, np.argwhere(relevance), k=k,
                      query_block=int(rng.integers(1, 25)), item_block=int(rng.integers(1, 30)))

    scores = (queries @ items.T).numpy()
    k = min(k, n_items)
    assert quantised == bool((np.diff(np.sort(scores, axis=1), axis=1) == 0).any())
    assert [r.tolist() for r in result.ranks] == [r.tolist() for r in relevant_ranks(scores, relevance)]
    expected_topk = full_sort_topk(scores, k)
    assert result.topk_indices.shape == (n_queries, k)
    np.testing.assert_array_equal(result.topk_indices, expected_topk)
    np.testing.assert_allclose(result.topk_scores, np.take_along_axis(scores, expected_topk, 1),
                               rtol=0, atol=0 if quantised else 1e-6)


def test_one_block_and_many_blocks_agree():
    rng = np.random.default_rng(7)
    queries, items = embeddings(rng, 50, 4, True), embeddings(rng, 60, 4, True)
    pairs = np.argwhere(random_relevance(rng, 50, 60))
    whole = rank_queries(queries, items, pairs, k=7, query_block=1000, item_block=1000)
    blocks = rank_queries(queries, items, pairs, k=7, query_block=3, item_block=4)
    np.testing.assert_array_equal(whole.topk_indices, blocks.topk_indices)
    np.testing.assert_array_equal(whole.topk_scores, blocks.topk_scores)
    assert [r.tolist() for r in whole.ranks] == [r.tolist() for r in blocks.ranks]


def test_relevant_item_in_topk_has_its_position_as_rank():
    rng = np.random.default_rng(3)
    queries, items = embeddings(rng, 30, 4, True), embeddings(rng, 40, 4, True)
    pairs = np.argwhere(random_relevance(rng, 30, 40))
    result = rank_queries(queries, items, pairs, k=10, query_block=4, item_block=6)
    for q, item in pairs:
        shown = np.flatnonzero(result.topk_indices[q] == item)
        if len(shown):
            assert shown[0] + 1 in result.ranks[q]


def test_many_relevant_items_per_query_and_duplicates():
    rng = np.random.default_rng(11)
    queries, items = embeddings(rng, 9, 4, True), embeddings(rng, 50, 4, True)
    relevance = np.zeros((9, 50), dtype=bool)
    relevance[0] = True  # more relevant pairs than item_block: a block of its own
    relevance[4, ::3] = True
    pairs = np.argwhere(relevance)
    pairs = np.concatenate([pairs, pairs[:10]])  # duplicates are ignored
    result = rank_queries(queries, items, pairs[rng.permutation(len(pairs))], k=5, query_block=4, item_block=8)
    scores = (queries @ items.T).numpy()
    assert [r.tolist() for r in result.ranks] == [r.tolist() for r in relevant_ranks(scores, relevance)]
    assert result.ranks[0].tolist() == list(range(1, 51))
    summary = summarize_ranks(result.ranks, ks=(1, 5))
    assert summary["n_queries"] == 2 and summary["n_queries_without_relevant"] == 7


def test_both_directions_and_progress_bar():
    rng = np.random.default_rng(5)
    texts, images = embeddings(rng, 25, 16, False), embeddings(rng, 10, 16, False)
    pairs = np.stack([np.arange(25), np.arange(25) % 10], axis=1)  # 2-3 captions per image
    both = retrieve_both_directions(texts, images, pairs, k=3, query_block=4, item_block=3, progress=True)
    scores = (texts @ images.T).numpy()
    relevance = np.zeros((25, 10), dtype=bool)
    relevance[pairs[:, 0], pairs[:, 1]] = True
    assert [r.tolist() for r in both["text_to_image"].ranks] == [r.tolist() for r in relevant_ranks(scores, relevance)]
    assert [r.tolist() for r in both["image_to_text"].ranks] == [
        r.tolist() for r in relevant_ranks(scores.T, relevance.T)]
    assert both["image_to_text"].topk_indices.shape == (10, 3)


@pytest.mark.parametrize("pairs", [[(0, 99)], [(-1, 0)], [(20, 0)]])
def test_out_of_range_pairs_raise(pairs):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        rank_queries(embeddings(rng, 20, 4, False), embeddings(rng, 30, 4, False), pairs)


def test_no_relevant_pairs_at_all():
    rng = np.random.default_rng(1)
    result = rank_queries(embeddings(rng, 6, 4, False), embeddings(rng, 8, 4, False), np.empty((0, 2)), k=20)
    assert result.topk_indices.shape == (6, 8) and all(len(r) == 0 for r in result.ranks)
    assert summarize_ranks(result.ranks)["n_queries_without_relevant"] == 6
