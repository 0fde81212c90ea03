"""Compare checkpoints on the same pairs: separation of matched vs mismatched, scales, agreement (docs/scoring.md,
"Comparing checkpoints").

Pure functions over the long score table (``scores.csv``) joined with ``results.csv``'s ``match``. Rows whose
``status`` is not ``ok`` carry no score; every statistic leaves them out and reports how many.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from clipeval.layout import RunLayout

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def attach_match(scores: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """A copy of the long score table with ``results.csv``'s boolean ``match``, by row position (``row_id``).

    Raises:
        ValueError: ``results`` has no usable ``match`` column or a ``row_id`` is out of range.
    """
    if "match" not in results.columns:
        raise ValueError("results.csv has no `match` column: matched vs mismatched needs a pairs "
                         "table that marks true matches (True) and mismatches (False)")
    match = results["match"]
    if match.isna().any() or not set(match.astype(str).str.lower()) <= {"true", "false"}:
        raise ValueError("results.csv `match` must be True/False in every row")
    row_ids = scores["row_id"].to_numpy()
    if len(row_ids) and (row_ids.min() < 0 or row_ids.max() >= len(results)):
        raise ValueError(f"scores.csv row_id outside 0..{len(results) - 1} (results.csv has {len(results)} rows)")
    flags = match.astype(str).str.lower().eq("true").to_numpy()
    return scores.assign(match=flags[row_ids])


def load_run_scores(run: RunLayout, match_required: bool = True) -> pd.DataFrame:
    """A scored run's ``scores.csv`` with ``match`` attached from its ``results.csv``; without ``match_required``
    a table without ``match`` comes back as it is (one group, :func:`summarize_scores`).

    Raises:
        RunIncomplete: the run did not finish (its tables may be an earlier run's or missing).
        ValueError: no usable ``match`` column (only a malformed one when not ``match_required``).
    """
    run.require_complete()
    scores, results = pd.read_csv(run.scores), pd.read_csv(run.results)
    if not match_required and "match" not in results.columns:
        return scores
    return attach_match(scores, results)


def select_ok(table: pd.DataFrame) -> pd.DataFrame:
    """The rows with ``status == "ok"`` (the only ones with a score)."""
    return table[table["status"] == "ok"]


def roc_auc(matched: ArrayLike, mismatched: ArrayLike) -> float:
    """Matched-vs-mismatched ROC AUC: P(score of a matched pair > score of a mismatched one); NaN when either
    group is empty. Ties count one half (Mann-Whitney U over average ranks), as ``sklearn``'s ``roc_auc_score``."""
    matched, mismatched = np.asarray(matched, float), np.asarray(mismatched, float)
    if not len(matched) or not len(mismatched):
        return float("nan")
    ranks = rankdata(np.concatenate([matched, mismatched]))  # ties get the average rank
    u_matched = ranks[: len(matched)].sum() - len(matched) * (len(matched) + 1) / 2
    return float(u_matched / (len(matched) * len(mismatched)))


def summarize_scores(table: pd.DataFrame, score: str = "cosine",
                     quantiles: Sequence[float] = QUANTILES) -> pd.DataFrame:
    """Per-checkpoint summary statistics of matched and mismatched scores (``score_summary.csv``'s columns:
    docs/scoring.md), checkpoints in order of first appearance. A table without ``match`` (a user's own pairs)
    is one group, ``all``, with no ``auc`` or ``gap``."""
    rows = {}
    for checkpoint, group in table.groupby("checkpoint", sort=False):
        ok = select_ok(group)
        row = {"n_ok": len(ok), "n_excluded": len(group) - len(ok)}
        groups = ((("matched", ok[ok["match"]]), ("mismatched", ok[~ok["match"]])) if "match" in ok
                  else (("all", ok),))
        for name, part in groups:
            values = part[score]
            row |= {f"{name}_count": len(values), f"{name}_mean": values.mean(), f"{name}_std": values.std()}
            row |= {f"{name}_q{round(q * 100):02d}": values.quantile(q) for q in quantiles}
        if "match" in ok:
            row["auc"] = roc_auc(ok.loc[ok["match"], score], ok.loc[~ok["match"], score])
            row["gap"] = row["matched_mean"] - row["mismatched_mean"]
        rows[checkpoint] = row
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "checkpoint"
    return summary


def add_percentiles(table: pd.DataFrame, score: str = "cosine") -> pd.DataFrame:
    """A copy with ``percentile``: each ok score's rank within its checkpoint, scaled to 0-100 (NaN when not ok).

    ``100 * (rank - 1) / (n - 1)`` with average ranks for ties (50 when ``n == 1``). Monotone within a
    checkpoint, so it keeps each AUC, but it puts families with different cosine ranges (SigLIP vs CLIP) on
    one axis.
    """
    ok = select_ok(table)
    ranks = ok.groupby("checkpoint", sort=False)[score].rank(method="average")
    sizes = ok.groupby("checkpoint", sort=False)[score].transform("size")
    percentile = (100 * (ranks - 1) / (sizes - 1)).where(sizes > 1, 50.0)
    return table.assign(percentile=percentile.reindex(table.index))


def pivot_scores(table: pd.DataFrame, score: str = "cosine") -> pd.DataFrame:
    """Wide table of pair scores: one row per ``row_id``, one column per checkpoint.

    Only pairs that are ok under every checkpoint are kept, so every comparison uses the same
    pairs; a checkpoint with no ok pair at all is left out (its ``n_ok`` in
    :func:`summarize_scores` is 0).
    """
    wide = select_ok(table).pivot(index="row_id", columns="checkpoint", values=score)
    return wide.reindex(columns=pd.unique(table["checkpoint"])).dropna(axis=1, how="all").dropna()


def spearman_matrix(table: pd.DataFrame, score: str = "cosine") -> pd.DataFrame:
    """Spearman rank correlation of pair scores between every two checkpoints, over :func:`pivot_scores`' pairs."""
    return pivot_scores(table, score).corr(method="spearman")
