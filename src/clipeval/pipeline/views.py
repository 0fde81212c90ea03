"""The tables of a scored run, written from its scored shards: ``results.csv``, ``scores.csv`` (a one-shard run's
views) and ``stats.json``/``.log`` (every scoring process's stats merged). docs/scoring.md ("Outputs") gives
their columns.
"""

from __future__ import annotations

import pandas as pd

from clipeval.atomic import write_csv, write_json, write_text
from clipeval.embed.stats import format_stats_log, merge_stats
from clipeval.eval.caveats import truncation_warnings
from clipeval.layout import PER_CHECKPOINT, ROW_COLUMNS, SCORE_COLUMNS, RunLayout, score_column
from clipeval.metrics.scales import clip_score_2_5


def input_columns(scored: pd.DataFrame, checkpoints: list[str]) -> pd.DataFrame:
    """The input columns a scored shard carries, under their input names (``input:<name>`` undone)."""
    outputs = set(ROW_COLUMNS) | {score_column(name, spec) for name in PER_CHECKPOINT for spec in checkpoints}
    inputs = scored[[column for column in scored.columns if column not in outputs]]
    return inputs.rename(columns=lambda name: name.removeprefix("input:"))


def scores_view(scored: pd.DataFrame, checkpoints: list[str]) -> pd.DataFrame:
    """One row per pair x checkpoint (:data:`~clipeval.eval.scoring.SCORE_COLUMNS`), checkpoints in run order."""
    parts = []
    for spec in checkpoints:
        cosine = scored[score_column("cosine", spec)]
        parts.append(pd.DataFrame({
            "row_id": scored["row"].to_numpy(), "checkpoint": spec, "cosine": cosine.to_numpy(),
            "clip_score_100": scored[score_column("clip_score_100", spec)].to_numpy(),
            "clip_score_2_5": clip_score_2_5(cosine.to_numpy()),
            "caption_truncated": scored[score_column("caption_truncated", spec)].astype("boolean").array,
            "image_width": scored["image_width"].astype("Int64").array,
            "image_height": scored["image_height"].astype("Int64").array,
            "status": scored[score_column("status", spec)].to_numpy(),
            "error": scored[score_column("error", spec)].fillna("").to_numpy()}, columns=list(SCORE_COLUMNS)))
    return pd.concat(parts, ignore_index=True)


def results_view(scored: pd.DataFrame, checkpoints: list[str]) -> pd.DataFrame:
    """Every input row with every input column and the primary (first) checkpoint's scores."""
    primary = checkpoints[0]
    results = input_columns(scored, checkpoints).reset_index(drop=True).copy()
    results["similarity"] = scored[score_column("cosine", primary)].to_numpy()
    results["clip_score_100"] = scored[score_column("clip_score_100", primary)].to_numpy()
    results["caption_truncated"] = scored[score_column("caption_truncated", primary)].astype("boolean").array
    results["image_width"] = scored["image_width"].astype("Int64").array
    results["image_height"] = scored["image_height"].astype("Int64").array
    results["status"] = scored[score_column("status", primary)].to_numpy()
    results["error"] = scored[score_column("error", primary)].fillna("").to_numpy()
    return results


def write_table_views(layout: RunLayout, checkpoints: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``results.csv`` and ``scores.csv`` from a one-shard run's scored shard; return both tables."""
    [shard] = layout.scored_shards()
    scored = pd.read_parquet(shard)
    results, scores = results_view(scored, checkpoints), scores_view(scored, checkpoints)
    write_csv(layout.scores, scores)
    write_csv(layout.results, results)
    return results, scores


def write_stats(layout: RunLayout, snapshots: list[dict]) -> dict:
    """Write ``stats.json`` and ``stats.log`` from the scoring processes' stats; return the merged stats.

    ``warnings`` holds the records of the checkpoints that truncated too many of the captions they
    scored (:func:`clipeval.eval.caveats.truncation_warnings`).
    """
    stats = merge_stats(snapshots)
    stats["warnings"] = [warning.record() for warning in truncation_warnings(
        (spec, entry["captions_truncated"], entry["pairs_scored"], entry["context_length"])
        for spec, entry in stats["checkpoints"].items())]
    write_json(layout.stats, stats)
    write_text(layout.stats_log, format_stats_log(stats))
    return stats
