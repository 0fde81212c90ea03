"""Compare checkpoints on the same pairs: separation of matched vs mismatched, scales, agreement.

Pure functions over the tidy long score table (``scores.csv``: one row per pair x checkpoint,
columns ``row_id``, ``checkpoint``, ``cosine``, ``clip_score_100``, ``clip_score_2_5``,
``status``, ``error``) joined with the ``match`` column of ``results.csv``. Rows whose
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
    """Add ``results.csv``'s boolean ``match`` column to the long score table by row position.

    Args:
        scores: long table; ``row_id`` is the 0-based position of the pair in ``results``.
        results: the per-pair table, one row per input pair in input order, with ``match``.

    Returns:
        A copy of ``scores`` with a boolean ``match`` column.

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
    """A scored run's ``scores.csv`` with ``match`` attached from its ``results.csv``.

    Args:
        run: the run folder.
        match_required: raise when ``results.csv`` has no ``match`` column; with False such a
            table is returned without ``match`` (every pair in one group, :func:`summarize_scores`).

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
    """Matched-vs-mismatched ROC AUC: P(score of a matched pair > score of a mismatched one).

    Ties count one half (the Mann-Whitney U statistic over average ranks), which equals
    ``sklearn.metrics.roc_auc_score`` with matched as the positive class.

    Args:
        matched: scores of true pairs.
        mismatched: scores of mismatched pairs.

    Returns:
        The AUC in [0, 1]; NaN when either group is empty.
    """
    matched, mismatched = np.asarray(matched, float), np.asarray(mismatched, float)
    if not len(matched) or not len(mismatched):
        return float("nan")
    ranks = rankdata(np.concatenate([matched, mismatched]))  # ties get the average rank
    u_matched = ranks[: len(matched)].sum() - len(matched) * (len(matched) + 1) / 2
    return float(u_matched / (len(matched) * len(mismatched)))


def summarize_scores(table: pd.DataFrame, score: str = "cosine",
                     quantiles: Sequence[float] = QUANTILES) -> pd.DataFrame:
    """Per-checkpoint summary statistics of matched and mismatched scores.

    Args:
        table: long score table with ``match`` (see :func:`attach_match`), or without it for pairs
            not marked matched or mismatched (a user's own table).
        score: the score column to summarise (``cosine``, ``clip_score_100``, ``percentile``...).
        quantiles: quantiles to report for each group.

    Returns:
        One row per checkpoint (in order of first appearance), columns ``n_ok``,
        ``n_excluded`` (rows with status != ok, left out), then for ``matched`` and
        ``mismatched``: ``count``, ``mean``, ``std`` and ``q05``... quantiles, then ``auc`` and
        ``gap`` (mean matched - mean mismatched). Without ``match``, one group ``all`` (``all_count``,
        ``all_mean``...) and no ``auc`` or ``gap``.
    """
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
    """Add ``percentile``: each ok score's rank within its checkpoint, scaled to 0-100.

    ``percentile = 100 * (rank - 1) / (n - 1)`` over the checkpoint's ``n`` ok scores, with
    average ranks for ties: the lowest score is 0 and the highest 100 (50 when ``n == 1``).
    Being monotone within a checkpoint it keeps each checkpoint's AUC, but puts model families
    with different cosine ranges (SigLIP vs CLIP) on one axis. Rows not ok get NaN.

    Args:
        table: long score table.
        score: the column to rank.

    Returns:
        A copy of ``table`` with a float ``percentile`` column.
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
    """Spearman rank correlation of pair scores between every two checkpoints.

    Args:
        table: long score table.
        score: the score column to correlate.

    Returns:
        Square checkpoint x checkpoint matrix over the pairs of :func:`pivot_scores`.
    """
    return pivot_scores(table, score).corr(method="spearman")
