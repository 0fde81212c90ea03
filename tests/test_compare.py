"""Checkpoint-comparison helpers, checked against scikit-learn and scipy."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from clipeval.layout import RunLayout
from clipeval.metrics.compare import (
    add_percentiles,
    attach_match,
    load_run_scores,
    pivot_scores,
    roc_auc,
    spearman_matrix,
    summarize_scores,
)
from clipeval.models.catalogue import is_random_init, label_checkpoint


def long_table(scores_by_checkpoint, match, failed=()):
    """Long score table; ``failed`` holds (checkpoint, row_id) pairs with status decode_error."""
    rows = []
    for checkpoint, scores in scores_by_checkpoint.items():
        for row_id, cosine in enumerate(scores):
            bad = (checkpoint, row_id) in failed
            rows.append({"row_id": row_id, "checkpoint": checkpoint, "cosine": np.nan if bad else cosine,
                         "clip_score_100": np.nan if bad else 100 * max(cosine, 0),
                         "clip_score_2_5": np.nan if bad else 2.5 * max(cosine, 0),
                         "status": "decode_error" if bad else "ok", "error": "broken" if bad else ""})
    return attach_match(pd.DataFrame(rows), pd.DataFrame({"match": match}))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    matched, mismatched = rng.normal(0.3, 0.1, 7), rng.normal(0.2, 0.1, 11)
    expected = roc_auc_score([1] * 7 + [0] * 11, np.concatenate([matched, mismatched]))
    assert roc_auc(matched, mismatched) == pytest.approx(expected)


def test_roc_auc_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    matched, mismatched = rng.integers(0, 4, 9).astype(float), rng.integers(0, 3, 6).astype(float)
    expected = roc_auc_score([1] * 9 + [0] * 6, np.concatenate([matched, mismatched]))
    assert roc_auc(matched, mismatched) == pytest.approx(expected)
    assert roc_auc([0.5, 0.5], [0.5]) == 0.5
    assert roc_auc([1.0], [0.0]) == 1.0 and roc_auc([0.0], [1.0]) == 0.0
    assert math.isnan(roc_auc([], [0.1]))


def test_summary_excludes_and_counts_failed_rows():
    match = [True, True, False, False, False]
    table = long_table({"hf:a": [0.4, 0.3, 0.1, 0.2, 0.35], "baseline:bert-resnet50-random": [0.1, 0.0, 0.1, 0.2, 0.0]},
                       match, failed={("hf:a", 4)})
    summary = summarize_scores(table)
    assert list(summary.index) == ["hf:a", "baseline:bert-resnet50-random"]  # order of appearance
    first = summary.loc["hf:a"]
    assert (first["n_ok"], first["n_excluded"]) == (4, 1)
    assert (first["matched_count"], first["mismatched_count"]) == (2, 2)
    assert first["matched_mean"] == pytest.approx(0.35) and first["mismatched_mean"] == pytest.approx(0.15)
    assert first["gap"] == pytest.approx(0.2)
    assert first["mismatched_q50"] == pytest.approx(0.15)
    assert first["matched_std"] == pytest.approx(np.std([0.4, 0.3], ddof=1))
    assert first["auc"] == pytest.approx(roc_auc_score([1, 1, 0, 0], [0.4, 0.3, 0.1, 0.2]))
    second = summary.loc["baseline:bert-resnet50-random"]
    assert second["n_excluded"] == 0
    assert second["auc"] == pytest.approx(roc_auc_score(match, [0.1, 0.0, 0.1, 0.2, 0.0]))


def test_percentiles_rank_within_checkpoint():
    table = long_table({"hf:a": [0.1, 0.3, 0.3, 0.2, 0.9], "hf:b": [5.0, 4.0, 3.0, 2.0, 1.0]},
                       [True, False, True, False, True], failed={("hf:b", 0)})
    with_percentiles = add_percentiles(table)
    first = with_percentiles.loc[with_percentiles["checkpoint"] == "hf:a", "percentile"].tolist()
    assert first == [0.0, 62.5, 62.5, 25.0, 100.0]  # ties share their average rank
    second = with_percentiles.loc[with_percentiles["checkpoint"] == "hf:b", "percentile"].tolist()
    assert math.isnan(second[0]) and second[1:] == [100.0, 200 / 3, 100 / 3, 0.0]
    before, after = summarize_scores(table), summarize_scores(with_percentiles, score="percentile")
    np.testing.assert_allclose(before["auc"], after["auc"])  # monotone: AUC unchanged


def test_spearman_matches_scipy_on_pairs_ok_everywhere():
    rng = np.random.default_rng(1)
    scores = {"hf:a": rng.normal(size=12), "hf:b": rng.normal(size=12), "open_clip:c": rng.normal(size=12)}
    scores["hf:b"][:6] = scores["hf:a"][:6]  # partial agreement
    table = long_table(scores, [True, False] * 6, failed={("open_clip:c", 3)})
    keep = [i for i in range(12) if i != 3]
    matrix = spearman_matrix(table)
    expected = spearmanr(np.column_stack([scores[name][keep] for name in scores])).statistic
    assert list(matrix.columns) == list(scores)
    np.testing.assert_allclose(matrix.to_numpy(), expected)
    assert list(pivot_scores(table).index) == keep


def test_attach_match_by_position_and_errors(tmp_path):
    results = pd.DataFrame({"caption": ["x", "y", "z"], "match": [True, False, True]})
    scores = pd.DataFrame({"row_id": [2, 0, 1, 2], "checkpoint": ["hf:a", "hf:a", "hf:a", "hf:b"],
                           "cosine": [0.1, 0.2, 0.3, 0.4], "clip_score_100": 0.0, "clip_score_2_5": 0.0,
                           "status": "ok", "error": ""})
    assert attach_match(scores, results)["match"].tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="no `match` column"):
        attach_match(scores, results.drop(columns="match"))
    with pytest.raises(ValueError, match="row_id outside"):
        attach_match(scores.assign(row_id=[0, 1, 2, 3]), results)
    results.to_csv(tmp_path / "results.csv", index=False)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    loaded = load_run_scores(RunLayout(tmp_path))
    assert loaded["match"].dtype == bool and loaded["match"].tolist() == [True, True, False, True]


def test_random_init_labels():
    assert is_random_init("baseline:bert-resnet50-random")
    assert not is_random_init("baseline:bert-resnet50") and not is_random_init("hf:openai/clip-vit-base-patch32")
    assert label_checkpoint("baseline:bert-resnet50-random").endswith("[RANDOM INIT]")
    assert label_checkpoint("hf:openai/clip-vit-base-patch32") == "hf:openai/clip-vit-base-patch32"
