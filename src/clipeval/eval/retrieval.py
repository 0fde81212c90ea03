"""Text-to-image (and image-to-text) retrieval evaluation of checkpoints on a retrieval set.

For each checkpoint the images and queries are embedded once (:func:`clipeval.eval.embed.embed_set`),
ranked with the block-wise :func:`clipeval.eval.ranking.retrieve_both_directions`, and
summarised with bootstrap CIs. Images that cannot be read (or that the model's transform
rejects) are left out of the collection and counted; a query whose relevant images are all
unusable counts as a query without a relevant item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.eval.bootstrap import bootstrap_summary, paired_bootstrap
from clipeval.eval.embed import EmbedOptions, LazyEncoder, embed_set
from clipeval.eval.metrics import per_query_metrics
from clipeval.eval.ranking import retrieve, retrieve_both_directions


@dataclass
class RetrievalReport:
    """Everything a retrieval run produces.

    Attributes:
        metrics: ``metrics.csv``: one row per checkpoint x dataset x direction x k.
        per_query: one row per checkpoint x direction x query: first rank, reciprocal rank,
            hit/recall@k, and the query's top-k item positions and scores (positions in the
            set's ``images`` table for text->image, in its ``queries`` table for image->text).
    """

    metrics: pd.DataFrame
    per_query: pd.DataFrame


def _metric_rows(table: pd.DataFrame, ks, spec, dataset, direction, n_resamples, seed, extra) -> list[dict]:
    summary = bootstrap_summary(table, ks, n_resamples=n_resamples, seed=seed).set_index("metric")
    rows = []
    for k in ks:
        row = {"checkpoint": spec, "dataset": dataset, "direction": direction, "k": k}
        for name in (f"hit_rate@{k}", f"recall@{k}", "mrr", "median_rank", "mean_rank"):
            column = name.split("@")[0]
            row[column] = summary.loc[name, "estimate"]
            row[f"{column}_ci_low"] = summary.loc[name, "ci_low"]
            row[f"{column}_ci_high"] = summary.loc[name, "ci_high"]
        rows.append({**row, **extra, "n_queries_without_relevant": int(table["n_relevant"].eq(0).sum()),
                     "n_queries": len(table)})
    return rows


def evaluate_retrieval(dataset: RetrievalSet, checkpoints: Sequence[str], ks: Sequence[int] = (1, 5, 10),
                       top_k: int = 10, n_resamples: int = 1000, seed: int = 0, device: str = "auto",
                       precision: str = "auto", progress: bool = True,
                       options: EmbedOptions | None = None) -> RetrievalReport:
    """Evaluate text->image and image->text retrieval for each checkpoint.

    Args:
        dataset: queries, images and relevance.
        checkpoints: checkpoint specs.
        ks: cut-offs for HitRate@k and Recall@k.
        top_k: length of the stored top-k lists (at least ``max(ks)``).
        n_resamples: bootstrap resamples for the 95% CIs (over queries).
        seed: bootstrap seed.
        device, precision: as for scoring.
        progress: progress bars.
        options: batching, image reading, decoding and embedding-cache options.

    Returns:
        A :class:`RetrievalReport`.
    """
    top_k = max(top_k, *ks)
    metrics, per_query = [], []
    for spec in checkpoints:
        encoder = LazyEncoder(spec, device, precision)
        embedded = embed_set(encoder, dataset, options, progress=progress)
        # relevance restricted to readable images, re-indexed into the embedded collection
        new_position = pd.Series(np.arange(len(embedded.image_positions)), index=embedded.image_positions)
        keep = np.isin(dataset.relevant[:, 1], embedded.image_positions)
        pairs = np.stack([dataset.relevant[keep, 0], new_position[dataset.relevant[keep, 1]].to_numpy()], axis=1)
        results = retrieve_both_directions(embedded.texts, embedded.images, pairs, k=top_k, progress=progress)
        extra = {"n_images": len(dataset.images), "n_images_unreadable": len(dataset.images) - len(embedded.images),
                 "n_texts": len(dataset.queries)}
        for direction, result in results.items():
            table = per_query_metrics(result.ranks, ks)
            metrics += _metric_rows(table, ks, spec, dataset.name, direction, n_resamples, seed, extra)
            items = embedded.image_positions if direction == "text_to_image" else np.arange(len(dataset.queries))
            queries = np.arange(len(dataset.queries)) if direction == "text_to_image" else embedded.image_positions
            per_query.append(table.reset_index().assign(
                checkpoint=spec, direction=direction, query=queries,
                top_items=[items[row].tolist() for row in result.topk_indices],
                top_scores=[row.tolist() for row in result.topk_scores]))
    return RetrievalReport(pd.DataFrame(metrics), pd.concat(per_query, ignore_index=True))


def compare_checkpoints(per_query: pd.DataFrame, checkpoint_a: str, checkpoint_b: str,
                        metric: str = "reciprocal_rank", direction: str = "text_to_image",
                        n_resamples: int = 1000, seed: int = 0):
    """Paired bootstrap of ``metric(a) - metric(b)`` over the same queries.

    Returns:
        A :class:`clipeval.eval.bootstrap.PairedDifference`.
    """
    tables = per_query[per_query["direction"] == direction].set_index(["checkpoint", "query"])[metric]
    a, b = tables.loc[checkpoint_a], tables.loc[checkpoint_b]
    a, b = a.align(b, join="inner")
    return paired_bootstrap(a.to_numpy(), b.to_numpy(), n_resamples=n_resamples, seed=seed)


def paired_differences(per_query: pd.DataFrame, checkpoints: Sequence[str], metric: str = "reciprocal_rank",
                       direction: str = "text_to_image", n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every checkpoint against the first: :func:`compare_checkpoints` as a table.

    Returns:
        One row per other checkpoint: ``checkpoint_a`` (the first), ``checkpoint_b``, ``metric``,
        ``direction``, ``difference`` (a - b), ``ci_low``, ``ci_high``, ``p_not_positive`` (share
        of resamples with a difference <= 0) and ``n_queries``.
    """
    rows = []
    for other in checkpoints[1:]:
        difference = compare_checkpoints(per_query, checkpoints[0], other, metric, direction, n_resamples, seed)
        rows.append({"checkpoint_a": checkpoints[0], "checkpoint_b": other, "metric": metric, "direction": direction,
                     "difference": difference.difference, "ci_low": difference.low, "ci_high": difference.high,
                     "p_not_positive": difference.fraction_not_positive, "n_queries": difference.n})
    return pd.DataFrame(rows, columns=["checkpoint_a", "checkpoint_b", "metric", "direction", "difference",
                                       "ci_low", "ci_high", "p_not_positive", "n_queries"])


def search(dataset: RetrievalSet, checkpoints: Sequence[str], texts: Sequence[str], top: int = 5,
           device: str = "auto", precision: str = "auto", progress: bool = True,
           options: EmbedOptions | None = None) -> pd.DataFrame:
    """Free-text search: the ``top`` images of ``dataset`` for each of ``texts``, per checkpoint.

    Returns:
        One row per checkpoint x text: ``checkpoint``, ``query`` (position in ``texts``),
        ``top_items`` (positions in ``dataset.images``) and ``top_scores`` (cosine).
    """
    rows = []
    for spec in checkpoints:
        encoder = LazyEncoder(spec, device, precision)
        embedded = embed_set(encoder, RetrievalSet(dataset.name, pd.DataFrame({"text": list(texts)}),
                                                   dataset.images, np.empty((0, 2), np.int64), dataset.base_dir),
                             options, progress=progress)
        result = retrieve(embedded.texts, embedded.images, np.empty((0, 2), np.int64), k=top)
        positions = embedded.image_positions
        rows += [{"checkpoint": spec, "query": q, "top_items": positions[result.topk_indices[q]].tolist(),
                  "top_scores": result.topk_scores[q].tolist()} for q in range(len(texts))]
    return pd.DataFrame(rows)


def pick_queries(per_query: pd.DataFrame, checkpoint: str, n: int = 3,
                 direction: str = "text_to_image") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` best and ``n`` worst queries by reciprocal rank (ties by query position).

    Returns:
        ``(best, worst)``: rows of ``per_query``, best first and worst first.
    """
    mine = per_query[(per_query["checkpoint"] == checkpoint) & (per_query["direction"] == direction)]
    mine = mine.dropna(subset=["reciprocal_rank"]).sort_values(["reciprocal_rank", "query"],
                                                               ascending=[False, True], kind="stable")
    return mine.head(n), mine.tail(n).iloc[::-1]
