"""Text-to-image (and image-to-text) retrieval evaluation of checkpoints on a retrieval set.

For each checkpoint the images and queries are embedded once (:func:`clipeval.embed.engine.embed_set`),
ranked with the block-wise :func:`clipeval.metrics.ranking.retrieve_both_directions`, and
summarised with bootstrap CIs and the chance level of each metric (its exact value under a
random ranking, :func:`clipeval.metrics.retrieval.chance_levels`). Images that cannot be read (or
that the model's transform rejects) are left out of the collection and counted; a query whose
relevant images are all unusable counts as a query without a relevant item. Every stage of
every checkpoint is timed (:class:`clipeval.embed.stats.StageTimer`), and :func:`hub_items`
lists the items that come first for many queries. What makes results look better than they are
is returned as warnings (:mod:`clipeval.eval.caveats`): truncated queries, metrics that are 1.0
by construction, hubs, and a checkpoint evaluated on labels it produced.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clipeval.data.retrieval_sets import RetrievalSet, check_images_found
from clipeval.embed.engine import LazyEncoder, embed_set
from clipeval.embed.options import EmbedOptions
from clipeval.embed.stats import StageTimer, package_versions
from clipeval.eval.caveats import circular_warnings, hub_warnings, trivial_metric_warnings, truncation_warnings
from clipeval.eval.options import RetrievalOptions
from clipeval.metrics.bootstrap import bootstrap_summary, paired_bootstrap
from clipeval.metrics.ranking import retrieve_both_directions
from clipeval.metrics.retrieval import chance_levels, per_query_metrics
from clipeval.models.encoder import resolve_device
from clipeval.warn import RunWarning

LIST_COLUMNS = ("top_items", "top_names", "top_scores")  # lists in memory, JSON lists in retrieval_ranks.csv


@dataclass
class RetrievalReport:
    """Everything a retrieval run produces.

    Attributes:
        metrics: ``metrics.csv``: one row per checkpoint x dataset x direction x k, each metric
            with its bootstrap CI and its chance level (``<metric>_chance``, see
            :func:`clipeval.metrics.retrieval.chance_levels`), ``n_candidates`` (items ranked)
            and ``trivial`` (``k >= n_candidates``: HitRate@k and Recall@k are 1.0 by construction).
        per_query: ``retrieval_ranks.csv``: one row per checkpoint x direction x query: first
            rank, reciprocal rank, hit/recall@k, ``n_items`` ranked, the query's position
            (``query``), what it is (``query_name``: the caption for text->image, the image
            reference for image->text) and its source ids (every ``id`` / ``*_id`` column of its
            row in the set's ``queries`` table for text->image, its ``images`` table for
            image->text: ``row_id``, COCO's ``image_id`` and ``annotation_id``...), its best-ranked
            relevant item (``relevant_item``, ``relevant_name``, ``relevant_score``: the one at
            ``first_rank``; empty without one), its top-k item positions (``top_items``: in the
            set's ``images`` table for text->image, its ``queries`` table for image->text), their
            names (``top_names``: image references, or captions) and scores (lists here, JSON
            lists in the file: :func:`ranks_table`).
        stats: time and memory per checkpoint and stage (the content of ``stats.json``), with
            ``hubs`` (:func:`hub_items`) and ``warnings`` (the records of :attr:`warnings`).
        warnings: what makes these numbers look better than they are (:mod:`clipeval.eval.caveats`).
    """

    metrics: pd.DataFrame
    per_query: pd.DataFrame
    stats: dict = field(default_factory=dict)
    warnings: list[RunWarning] = field(default_factory=list)


def _metric_rows(table: pd.DataFrame, ks, spec, dataset, direction, n_resamples, seed, extra) -> list[dict]:
    summary = bootstrap_summary(table, ks, n_resamples=n_resamples, seed=seed).set_index("metric")
    chance = chance_levels(table["n_relevant"], int(table["n_items"].iloc[0]) if len(table) else 0, ks)
    rows = []
    for k in ks:
        row = {"checkpoint": spec, "dataset": dataset, "direction": direction, "k": k}
        for name in (f"hit_rate@{k}", f"recall@{k}", "mrr", "median_rank", "mean_rank"):
            column = name.split("@")[0]
            row[column] = summary.loc[name, "estimate"]
            row[f"{column}_ci_low"] = summary.loc[name, "ci_low"]
            row[f"{column}_ci_high"] = summary.loc[name, "ci_high"]
            row[f"{column}_chance"] = chance[name]
        n_items = int(table["n_items"].iloc[0]) if len(table) else 0
        rows.append({**row, **extra, "n_queries_without_relevant": int(table["n_relevant"].eq(0).sum()),
                     "n_queries": len(table), "n_candidates": n_items, "trivial": k >= n_items})
    return rows


def _id_columns(table: pd.DataFrame) -> list[str]:
    """A table's source-id columns: ``id`` and every ``*_id``."""
    return [column for column in table.columns if str(column) == "id" or str(column).endswith("_id")]


def _best_relevant(queries, items, query_of: np.ndarray, item_of: np.ndarray,
                   n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, its most similar relevant item (the one at its first rank; -1 when none) and that score (NaN)."""
    best, score = np.full(n_queries, -1, dtype=np.int64), np.full(n_queries, np.nan)
    if len(query_of):
        scores = (queries[query_of] * items[item_of]).sum(dim=-1).numpy()
        order = np.lexsort((-scores, query_of))  # by query, best first
        first = order[np.r_[True, query_of[order][1:] != query_of[order][:-1]]]
        best[query_of[first]], score[query_of[first]] = item_of[first], scores[first]
    return best, score


def _per_query_rows(table: pd.DataFrame, result, spec: str, direction: str, dataset: RetrievalSet,
                    image_positions: np.ndarray, best: tuple[np.ndarray, np.ndarray]) -> pd.DataFrame:
    """The per-query table of one direction: the query (position, name, source ids), its best-ranked
    relevant item and its top items."""
    texts, refs = dataset.queries["text"].astype(str).to_numpy(), dataset.images["image"].astype(str).to_numpy()
    if direction == "text_to_image":
        queries, query_names, items, item_names = np.arange(len(texts)), texts, image_positions, refs
        sources = dataset.queries
    else:
        queries, query_names, items, item_names = image_positions, refs[image_positions], np.arange(len(texts)), texts
        sources = dataset.images
    ids = sources[_id_columns(sources)].iloc[queries].reset_index(drop=True)
    ids = ids.astype({column: "Int64" for column in ids if pd.api.types.is_integer_dtype(ids[column])})  # NA-able
    top = [items[row] for row in result.topk_indices]
    found = best[0] >= 0
    relevant = pd.array(np.where(found, items[np.maximum(best[0], 0)], 0), dtype="Int64")
    relevant[~found] = pd.NA
    return pd.concat([table.reset_index(), ids], axis=1).assign(
        checkpoint=spec, direction=direction, query=queries, query_name=query_names,
        relevant_item=relevant, relevant_name=np.where(found, item_names[relevant.fillna(0).to_numpy(int)], None),
        relevant_score=best[1],
        top_items=[row.tolist() for row in top], top_names=[item_names[row].tolist() for row in top],
        top_scores=[row.tolist() for row in result.topk_scores])


def ranks_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """:attr:`RetrievalReport.per_query` as ``retrieval_ranks.csv`` holds it: the top-k lists as JSON lists."""
    return per_query.assign(**{column: [json.dumps(value) for value in per_query[column]]
                               for column in LIST_COLUMNS if column in per_query})


def worst_queries(per_query: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` worst queries of each checkpoint and direction: the largest first rank first (ties by
    query position); queries without a relevant item are left out."""
    ranked = per_query.dropna(subset=["first_rank"])
    ranked = ranked.sort_values(["first_rank", "query"], ascending=[False, True], kind="stable")
    return ranked.groupby(["checkpoint", "direction"], sort=False).head(n).reset_index(drop=True)


def evaluate_retrieval(dataset: RetrievalSet, checkpoints: Sequence[str],
                       options: RetrievalOptions = RetrievalOptions(),
                       embed: EmbedOptions = EmbedOptions()) -> RetrievalReport:
    """Evaluate text->image and image->text retrieval for each checkpoint.

    Before any model is loaded, the set's local image files are checked
    (:func:`clipeval.data.retrieval_sets.check_images_found`).

    Args:
        dataset: queries, images and relevance.
        checkpoints: checkpoint specs.
        options: cut-offs, bootstrap, stored top-k length, missing images.
        embed: the embedding pipeline (device, precision, batching, cache, reading, progress bars).

    Returns:
        A :class:`RetrievalReport`.

    Raises:
        ImagesNotFoundError: no local image found, or too few (see ``allow_missing_images``).
    """
    check_images_found(dataset, options.allow_missing_images)
    ks, n_resamples, seed = list(options.ks), options.n_resamples, options.seed
    top_k = max(options.top_k, *ks)
    torch_device = resolve_device(embed.device)
    metrics, per_query, stats = [], [], {}
    for spec in checkpoints:
        timer = StageTimer(torch_device)
        encoder = LazyEncoder(spec, embed, timer)
        embedded = embed_set(encoder, dataset, embed, timer=timer)
        # relevance restricted to readable images, re-indexed into the embedded collection
        new_position = pd.Series(np.arange(len(embedded.image_positions)), index=embedded.image_positions)
        keep = np.isin(dataset.relevant[:, 1], embedded.image_positions)
        pairs = np.stack([dataset.relevant[keep, 0], new_position[dataset.relevant[keep, 1]].to_numpy()], axis=1)
        with timer.stage("rank", items=len(dataset.queries) + len(embedded.images)):
            results = retrieve_both_directions(embedded.texts, embedded.images, pairs, k=top_k, progress=embed.progress)
        extra = {"n_images": len(dataset.images), "n_images_unreadable": len(dataset.images) - len(embedded.images),
                 "n_texts": len(dataset.queries)}
        with timer.stage("metrics", items=len(dataset.queries) + len(embedded.images)):
            for direction, result in results.items():
                n_items = len(embedded.images) if direction == "text_to_image" else len(dataset.queries)
                table = per_query_metrics(result.ranks, ks).assign(n_items=n_items)
                metrics += _metric_rows(table, ks, spec, dataset.name, direction, n_resamples, seed, extra)
                best = (_best_relevant(embedded.texts, embedded.images, pairs[:, 0], pairs[:, 1], len(dataset.queries))
                        if direction == "text_to_image" else
                        _best_relevant(embedded.images, embedded.texts, pairs[:, 1], pairs[:, 0], len(embedded.images)))
                per_query.append(_per_query_rows(table, result, spec, direction, dataset, embedded.image_positions,
                                                 best))
        loaded = encoder.encoder
        stats[spec] = {"model_loaded": loaded is not None, "precision": encoder.precision,
                       "description": loaded.description if loaded else None,
                       "images_embedded": len(embedded.images), "images_unreadable": extra["n_images_unreadable"],
                       "captions_truncated": embedded.queries_truncated,
                       "context_length": loaded.context_length if loaded else None, "cache": embedded.cache,
                       **timer.summary()}
    metrics, per_query = pd.DataFrame(metrics), pd.concat(per_query, ignore_index=True)
    hubs = hub_items(per_query)
    warnings = [*circular_warnings(dataset.queries, list(checkpoints), dataset.name),
                *truncation_warnings(((spec, entry["captions_truncated"], len(dataset.queries), entry["context_length"])
                                      for spec, entry in stats.items()), "queries",
                                     "retrieval_stats.json: captions_truncated"),
                *trivial_metric_warnings(metrics), *hub_warnings(hubs)]
    run_stats = {"queries": len(dataset.queries), "images": len(dataset.images),
                 "relevant_pairs": len(dataset.relevant), "device": str(torch_device),
                 "batch_size": embed.batch_size, "read_threads": embed.fetch.read_threads,
                 "decode_processes": embed.decode_processes,
                 "encode_processes": embed.encode_processes, "fast_decode": embed.fast_decode, "decoder": embed.decoder,
                 "versions": package_versions(), "checkpoints": stats, "hubs": hubs.to_dict("records"),
                 "warnings": [warning.record() for warning in warnings]}
    return RetrievalReport(metrics, per_query, run_stats, warnings)


def hit_counts(metrics: pd.DataFrame, direction: str = "text_to_image", k: int = 5) -> pd.DataFrame:
    """How many queries found a relevant item in the top ``k``, per checkpoint and dataset (and by chance).

    The count the retrieval write-up reported ("6 of 833"): ``hits`` = HitRate@k x queries,
    beside ``hits_chance``, the count expected from a random ranking.

    Args:
        metrics: rows of ``metrics.csv``.
        direction: ``text_to_image`` or ``image_to_text``.
        k: the cut-off (a ``k`` of ``metrics``).

    Returns:
        ``checkpoint``, ``dataset``, ``queries``, ``hits``, ``hits_chance``, ``hit_rate`` (percent).
    """
    rows = metrics[(metrics["direction"] == direction) & (metrics["k"] == k)]
    queries = rows["n_queries"] - rows["n_queries_without_relevant"]
    return pd.DataFrame({"checkpoint": rows["checkpoint"], "dataset": rows["dataset"], "queries": queries,
                         "hits": (rows["hit_rate"] * queries).round().astype(int),
                         "hits_chance": (rows["hit_rate_chance"] * queries).round(1),
                         "hit_rate": rows["hit_rate"] * 100}).reset_index(drop=True)


def hub_items(per_query: pd.DataFrame, min_share: float = 0.05, min_ratio: float = 5.0) -> pd.DataFrame:
    """Items that come first for many queries: hubs, which can inflate HitRate@1 far above chance.

    An item is a hub for a checkpoint and direction when it is the top-1 result of more than
    ``min_share`` of the queries and of more than ``min_ratio`` times its fair share (1 / number
    of items ranked). A hub that is relevant to many queries (a short, generic caption that
    truly describes many images) scores hits without the model telling the queries apart.

    Args:
        per_query: :attr:`RetrievalReport.per_query`.
        min_share: smallest share of the queries.
        min_ratio: smallest multiple of the fair share.

    Returns:
        One row per hub, most frequent first: ``checkpoint``, ``direction``, ``item`` (its
        position, as in ``top_items``), ``name``, ``top1_queries``, ``top1_share`` (of the
        direction's queries), ``fair_share`` and ``relevant_share`` (share of the queries the
        item is relevant to).
    """
    rows = []
    for (spec, direction), group in per_query.groupby(["checkpoint", "direction"], sort=False):
        other = per_query[(per_query["checkpoint"] == spec) & (per_query["direction"] != direction)]
        relevant_to = other.set_index("query")["n_relevant"]
        fair = 1.0 / int(group["n_items"].iloc[0])
        top1 = pd.DataFrame({"item": group["top_items"].str[0], "name": group["top_names"].str[0]})
        counts = top1.groupby(["item", "name"], sort=False).size().rename("top1_queries").reset_index()
        counts["top1_share"] = counts["top1_queries"] / len(group)
        hubs = counts[(counts["top1_share"] > min_share) & (counts["top1_share"] > min_ratio * fair)]
        rows += [{"checkpoint": spec, "direction": direction, **hub, "fair_share": fair,
                  "relevant_share": relevant_to.get(hub["item"], 0) / len(group)} for hub in hubs.to_dict("records")]
    columns = ["checkpoint", "direction", "item", "name", "top1_queries", "top1_share", "fair_share", "relevant_share"]
    return pd.DataFrame(rows, columns=columns).sort_values("top1_queries", ascending=False, kind="stable",
                                                          ignore_index=True)


def compare_checkpoints(per_query: pd.DataFrame, checkpoint_a: str, checkpoint_b: str,
                        metric: str = "reciprocal_rank", direction: str = "text_to_image",
                        n_resamples: int = 1000, seed: int = 0):
    """Paired bootstrap of ``metric(a) - metric(b)`` over the same queries.

    Returns:
        A :class:`clipeval.metrics.bootstrap.PairedDifference`.
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
