"""Text-to-image (and image-to-text) retrieval evaluation of checkpoints on a dataset.

A :class:`RetrievalSet` is a list of text queries, a collection of images, and the relevant
(query, image) pairs: several relevant images per query are allowed, as are queries with
none (reported, not dropped). It can be built from explicit tables
(:func:`read_retrieval_tables`) or from any pairs source (:func:`retrieval_set_from_pairs`:
distinct captions are queries, distinct images the collection, matched rows the relevance).

For each checkpoint the images and queries are embedded once, ranked with the block-wise
:func:`clipeval.retrieval.retrieve_both_directions`, and summarised with bootstrap CIs.
Images that cannot be read are left out of the collection and counted; a query whose
relevant images are all unreadable counts as a query without a relevant item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from clipeval.bootstrap import bootstrap_summary, paired_bootstrap
from clipeval.checkpoints import load_encoder
from clipeval.encoder import Encoder
from clipeval.images import read_images
from clipeval.retrieval import retrieve, retrieve_both_directions
from clipeval.retrieval_metrics import per_query_metrics
from clipeval.sources import PairsTableError, read_pairs

DIRECTIONS = ("text_to_image", "image_to_text")


@dataclass
class RetrievalSet:
    """Queries, an image collection and their relevance.

    Attributes:
        name: dataset name used in ``metrics.csv``.
        queries: one row per query; column ``text`` (plus any ids).
        images: one row per image; column ``image`` (path or URL), plus any ids/captions.
        relevant: (P, 2) int array of ``(query position, image position)`` pairs.
        base_dir: folder that relative image paths are resolved against.
    """

    name: str
    queries: pd.DataFrame
    images: pd.DataFrame
    relevant: np.ndarray
    base_dir: str | None = None


def retrieval_set_from_pairs(pairs: pd.DataFrame, name: str, image_column: str = "image",
                             caption_column: str = "caption", match_column: str | None = "match") -> RetrievalSet:
    """Distinct captions become queries, distinct images the collection, matched rows the relevance.

    Args:
        pairs: a pairs table (``read_pairs``); rows with ``match_column`` False only add their
            caption and image, not a relevant pair. Without that column every row is a match.
        name: dataset name.
        image_column: image column of ``pairs``.
        caption_column: caption column of ``pairs``.
        match_column: boolean column marking true pairs, or None.
    """
    usable = pairs[pairs[caption_column].notna() & pairs[image_column].notna()]
    texts = pd.Index(pd.unique(usable[caption_column].astype(str)))
    refs = pd.Index(pd.unique(usable[image_column].astype(str)))
    matched = usable if match_column is None or match_column not in usable else usable[usable[match_column].astype(bool)]
    relevant = np.stack([texts.get_indexer(matched[caption_column].astype(str)),
                         refs.get_indexer(matched[image_column].astype(str))], axis=1).reshape(-1, 2)
    return RetrievalSet(name, pd.DataFrame({"text": texts}), pd.DataFrame({"image": refs}),
                        np.unique(relevant, axis=0), pairs.attrs.get("base_dir"))


def read_retrieval_tables(queries: str | Path, images: str | Path, relevance: str | Path, name: str | None = None,
                          text_column: str = "caption", image_column: str = "image") -> RetrievalSet:
    """Build a set from three tables: queries (``query_id``, text), images (``image_id``, image),
    relevance (``query_id``, ``image_id``; one row per relevant pair).

    Raises:
        PairsTableError: a missing column, or a relevance id absent from the queries/images.
    """
    query_table = read_pairs(queries, image_column="query_id", caption_column=text_column)
    image_table = read_pairs(images, image_column=image_column, caption_column="image_id")
    relevance_table = read_pairs(relevance, image_column="image_id", caption_column="query_id")
    query_index = pd.Index(query_table["query_id"].astype(str))
    image_index = pd.Index(image_table["image_id"].astype(str))
    rows = query_index.get_indexer(relevance_table["query_id"].astype(str))
    columns = image_index.get_indexer(relevance_table["image_id"].astype(str))
    if (rows < 0).any() or (columns < 0).any():
        raise PairsTableError(f"{relevance}: {(rows < 0).sum()} query ids and {(columns < 0).sum()} image ids "
                              "are not in the queries / images tables")
    return RetrievalSet(name or Path(queries).parent.name,
                        query_table.rename(columns={text_column: "text"}),
                        image_table.rename(columns={image_column: "image"}),
                        np.unique(np.stack([rows, columns], axis=1), axis=0),
                        image_table.attrs.get("base_dir"))


def load_retrieval_set(name: str, pairs: str | Path | None = None, queries: str | Path | None = None,
                       images: str | Path | None = None, relevance: str | Path | None = None,
                       image_column: str = "image", caption_column: str = "caption",
                       images_dir: str | None = None) -> RetrievalSet:
    """Load a set from a pairs source, or from the three tables when ``relevance`` is given.

    Raises:
        ValueError: neither a pairs source nor all three tables.
    """
    if relevance:
        if not (queries and images):
            raise ValueError("--relevance needs --queries and --images too")
        return read_retrieval_tables(queries, images, relevance, name, caption_column, image_column)
    if not pairs:
        raise ValueError("give a pairs source, or all three of queries, images and relevance tables")
    table = read_pairs(pairs, image_column, caption_column, images_dir=images_dir)
    return retrieval_set_from_pairs(table, name, image_column, caption_column)


@dataclass
class EmbeddedSet:
    """A set's embeddings under one checkpoint; unreadable images are absent from ``images``."""

    texts: torch.Tensor
    images: torch.Tensor
    image_positions: np.ndarray  # positions in RetrievalSet.images of the embedded rows
    image_status: list[str]


def embed_set(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 32, workers: int = 8,
              progress: bool = True) -> EmbeddedSet:
    """Embed every query and every readable image of ``dataset`` with ``encoder``."""
    refs = dataset.images["image"].tolist()
    statuses, image_embeddings, positions = [], [], []
    for start in tqdm(range(0, len(refs), batch_size), desc=f"images {encoder.name}", disable=not progress):
        loaded = read_images(refs[start:start + batch_size], dataset.base_dir, workers=workers)
        statuses += [image.status for image in loaded]
        ok = [i for i, image in enumerate(loaded) if image.status == "ok"]
        if ok:
            pixels = torch.stack([encoder.preprocess(loaded[i].image) for i in ok])
            image_embeddings.append(encoder.encode_images(pixels))
            positions += [start + i for i in ok]
    texts = dataset.queries["text"].tolist()
    text_embeddings = [encoder.encode_texts(texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)]
    return EmbeddedSet(torch.cat(text_embeddings), torch.cat(image_embeddings), np.asarray(positions, dtype=np.int64),
                       statuses)


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
                       top_k: int = 10, n_resamples: int = 1000, seed: int = 0, batch_size: int = 32,
                       device: str = "auto", precision: str = "auto", progress: bool = True) -> RetrievalReport:
    """Evaluate text->image and image->text retrieval for each checkpoint.

    Args:
        dataset: queries, images and relevance.
        checkpoints: checkpoint specs.
        ks: cut-offs for HitRate@k and Recall@k.
        top_k: length of the stored top-k lists (at least ``max(ks)``).
        n_resamples: bootstrap resamples for the 95% CIs (over queries).
        seed: bootstrap seed.
        batch_size, device, precision: as for scoring.
        progress: progress bars.

    Returns:
        A :class:`RetrievalReport`.
    """
    top_k = max(top_k, *ks)
    metrics, per_query = [], []
    for spec in checkpoints:
        encoder = load_encoder(spec, device, precision)
        embedded = embed_set(encoder, dataset, batch_size, progress=progress)
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
        A :class:`clipeval.bootstrap.PairedDifference`.
    """
    tables = per_query[per_query["direction"] == direction].set_index(["checkpoint", "query"])[metric]
    a, b = tables.loc[checkpoint_a], tables.loc[checkpoint_b]
    a, b = a.align(b, join="inner")
    return paired_bootstrap(a.to_numpy(), b.to_numpy(), n_resamples=n_resamples, seed=seed)


def search(dataset: RetrievalSet, checkpoints: Sequence[str], texts: Sequence[str], top: int = 5,
           batch_size: int = 32, device: str = "auto", precision: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Free-text search: the ``top`` images of ``dataset`` for each of ``texts``, per checkpoint.

    Returns:
        One row per checkpoint x text: ``checkpoint``, ``query`` (position in ``texts``),
        ``top_items`` (positions in ``dataset.images``) and ``top_scores`` (cosine).
    """
    rows = []
    for spec in checkpoints:
        encoder = load_encoder(spec, device, precision)
        embedded = embed_set(encoder, RetrievalSet(dataset.name, pd.DataFrame({"text": list(texts)}),
                                                   dataset.images, np.empty((0, 2), np.int64), dataset.base_dir),
                             batch_size, progress=progress)
        result = retrieve(embedded.texts, embedded.images, np.empty((0, 2), np.int64), k=top)
        rows += [{"checkpoint": spec, "query": q, "top_items": embedded.image_positions[result.topk_indices[q]].tolist(),
                  "top_scores": result.topk_scores[q].tolist()} for q in range(len(texts))]
    return pd.DataFrame(rows)
