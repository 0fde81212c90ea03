"""The finder's exact and approximate search: exact top-k, the index rule, faiss build/search/save/load."""

import sys
import warnings

import numpy as np
import pytest
import torch

from clipeval.extras import MissingExtra
from clipeval.finder import ann
from clipeval.metrics.ranking import rank_queries, top_k


def _unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One full product, sorted by (score descending, position ascending)."""
    scores = queries.astype(np.float32) @ vectors.astype(np.float32).T
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def _clustered(n: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim)))
    members = rng.integers(clusters, size=n)
    vectors = _unit(centres[members] + 0.15 * rng.standard_normal((n, dim)))
    queries = _unit(vectors[rng.choice(n, 200, replace=False)] + 0.1 * rng.standard_normal((200, dim)))
    return vectors, queries


def test_exact_search_equals_a_brute_force_sort_with_ties_and_small_blocks():
    rng = np.random.default_rng(0)
    # Scores quantised to a few values make many exact ties; the order among them is by position.
    vectors = np.round(rng.standard_normal((300, 8)), 0).astype(np.float32)
    vectors[50:60] = vectors[7]  # duplicates: equal scores everywhere
    queries = np.round(rng.standard_normal((17, 8)), 0).astype(np.float32)
    for k in (1, 10, 299):
        expected_scores, expected = _brute_force(vectors, queries, k)
        scores, positions = top_k(queries, vectors, k, query_block=5, item_block=64)
        np.testing.assert_array_equal(positions, expected)
        np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    scores, positions = ann.exact_search(vectors, queries, 10)
    np.testing.assert_array_equal(positions, _brute_force(vectors, queries, 10)[1])
    assert scores.dtype == np.float32 and positions.dtype == np.int64


def test_exact_search_caps_k_at_n_and_takes_one_query_and_float16(tmp_path):
    rng = np.random.default_rng(1)
    vectors = _unit(rng.standard_normal((7, 16)))
    query = vectors[3]
    scores, positions = ann.exact_search(vectors, query, 50)
    assert positions.shape == (1, 7) and positions[0, 0] == 3 and sorted(positions[0]) == list(range(7))
    assert np.all(np.diff(scores[0]) <= 0)
    half = vectors.astype(np.float16)
    np.testing.assert_array_equal(ann.exact_search(half, query, 7)[1],
                                  _brute_force(half.astype(np.float32), query[None], 7)[1])
    np.save(tmp_path / "v.npy", half)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")  # read-only, as an index's vectors are opened
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        positions = top_k(query[None], mapped, 7, item_block=3)[1]
    np.testing.assert_array_equal(positions, ann.exact_search(half, query, 7)[1])


def test_top_k_agrees_with_retrieve_and_refuses_non_finite_items():
    rng = np.random.default_rng(2)
    vectors, queries = _unit(rng.standard_normal((500, 32))), _unit(rng.standard_normal((40, 32)))
    reference = rank_queries(torch.from_numpy(queries), torch.from_numpy(vectors), np.zeros((0, 2)), k=10,
                             item_block=64)
    np.testing.assert_array_equal(top_k(queries, vectors, 10, item_block=64)[1], reference.topk_indices)
    vectors[123, 4] = np.nan
    with pytest.raises(ValueError, match="finite"):
        top_k(queries, vectors, 10, item_block=64)


def test_choose_ann_is_exact_for_small_collections_and_fits_the_budget_for_large_ones():
    assert ann.choose_ann(ann.EXACT_UP_TO, 512, 2**40) is None
    flat = ann.choose_ann(1_000_000, 512, 4096 * 2**20)
    assert flat["type"] == "ivf_flat" and flat["nlist"] == 4096 and flat["estimated_bytes"] <= 4096 * 2**20
    sq8 = ann.choose_ann(1_000_000, 512, 1024 * 2**20)
    assert sq8["type"] == "ivf_sq8" and sq8["estimated_bytes"] <= 1024 * 2**20
    pq = ann.choose_ann(10_000_000, 512, 1024 * 2**20)
    assert pq["type"] == "ivf_pq" and pq["factory"].startswith("OPQ") and pq["estimated_bytes"] <= 1024 * 2**20
    with pytest.raises(ValueError, match="budget"):
        ann.choose_ann(10_000_000, 512, 2**20)
    assert ann.nlist_for(20_000) == 512 and 20_000 >= 39 * 512
    assert ann.nlist_for(10) == 1


def test_build_and_search_reach_recall_on_a_clustered_set_and_round_trip(tmp_path):
    vectors, queries = _clustered(20_000, 64, clusters=200, seed=3)
    params = ann.ann_params(len(vectors), 64)
    assert params["type"] == "ivf_flat"
    index = ann.build_ann(vectors, params, progress=False)
    assert index.ntotal == len(vectors) and 1 <= index.params["nprobe"] <= index.params["nlist"]
    scores, positions = index.search(queries, 10)
    _, truth = ann.exact_search(vectors, queries, 10)
    assert ann.neighbour_recall(positions, truth) >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, positions, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)

    index.save(tmp_path / "ann" / "x.faiss")
    loaded = ann.AnnIndex.load(tmp_path / "ann" / "x.faiss")
    assert loaded.params == index.params
    loaded_scores, loaded_positions = loaded.search(queries, 10)
    np.testing.assert_array_equal(loaded_positions, positions)
    np.testing.assert_array_equal(loaded_scores, scores)


def test_an_explicit_hnsw_index_is_calibrated_and_round_trips(tmp_path):
    vectors, queries = _clustered(3_000, 32, clusters=30, seed=5)
    index = ann.build_ann(vectors, ann.hnsw_params(len(vectors), 32), progress=False)
    assert index.params["calibration"]["recall_by_value"][str(index.params["ef_search"])] >= 0.97
    positions = index.search(queries, 10)[1]
    assert ann.neighbour_recall(positions, ann.exact_search(vectors, queries, 10)[1]) >= 0.9
    index.save(tmp_path / "h.faiss")
    np.testing.assert_array_equal(ann.AnnIndex.load(tmp_path / "h.faiss").search(queries, 10)[1], positions)


def test_a_compressed_index_stops_calibrating_when_recall_stops_improving():
    vectors, _ = _clustered(8_000, 32, clusters=50, seed=4)
    params = {**ann.ann_params(len(vectors), 32), "type": "ivf_pq", "factory": f"IVF{ann.nlist_for(8_000)},PQ4"}
    index = ann.build_ann(vectors, params, progress=False)
    recalls = {int(value): recall for value, recall in index.params["calibration"]["recall_by_value"].items()}
    last, goal = max(recalls), index.params["calibration"]["goal"]
    assert recalls[last] < goal and last < index.params["nlist"], "PQ4 codes should not reach the goal"
    assert index.params["nprobe"] == last // 2 and recalls[last] - recalls[last // 2] < ann.PLATEAU


def test_without_faiss_the_error_names_the_finder_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(MissingExtra, match=r"approximate search needs faiss.*clipeval\[finder\]"):
        ann.build_ann(np.eye(4, dtype=np.float32), ann.ann_params(4, 4), progress=False)
    with pytest.raises(MissingExtra, match="finder"):
        ann.AnnIndex.load("nothing.faiss")
