"""Retrieval sets: text queries, an image collection and which (query, image) pairs are relevant.

A :class:`RetrievalSet` may give a query several relevant images, or none (reported, not
dropped). It is read from explicit tables (:func:`read_retrieval_tables`: queries, images,
relevance) or built from any pairs source (:func:`retrieval_set_from_pairs`: distinct captions
are queries, distinct images the collection, matched rows the relevance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.sources import PairsTableError, read_pairs


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


def relevance_matrix(dataset: RetrievalSet) -> np.ndarray:
    """Dense ``(queries, images)`` boolean relevance of a retrieval set."""
    relevance = np.zeros((len(dataset.queries), len(dataset.images)), dtype=bool)
    relevance[dataset.relevant[:, 0], dataset.relevant[:, 1]] = True
    return relevance


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
    has_match = match_column is not None and match_column in usable
    matched = usable[usable[match_column].astype(bool)] if has_match else usable
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
