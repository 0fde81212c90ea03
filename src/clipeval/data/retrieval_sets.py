"""Retrieval sets: text queries, an image collection and which (query, image) pairs are relevant.

A :class:`RetrievalSet` may give a query several relevant images, or none (reported, not
dropped). It is read from explicit tables (:func:`read_retrieval_tables`: queries, images,
relevance) or built from any pairs source (:func:`retrieval_set_from_pairs`: each matched row
is a query relevant to its own image, distinct images are the collection; or, on request, one
query per distinct caption string).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.fetch import DEFAULT_CACHE_DIR, is_url
from clipeval.data.options import PairsTableError, RetrievalSource, SourceOptions
from clipeval.data.sources import read_pairs

MIN_FOUND_FRACTION = 0.5  # below this share of local images found, a run stops before loading a model


class ImagesNotFoundError(PairsTableError):
    """Too few of a retrieval set's image files exist: the image folder or column is wrong."""


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


def check_images_found(dataset: RetrievalSet, allow_missing: bool = False) -> int:
    """Stop early when the set's local image references do not resolve to files.

    Run before any model is loaded: a wrong ``--images-dir`` would otherwise cost a full
    caption encoding before failing. Relative paths are resolved against ``dataset.base_dir``;
    URLs are not checked here (fetching them is the run's job, with statuses per image).

    Args:
        dataset: the retrieval set.
        allow_missing: go on when at least one image is found, however few.

    Returns:
        The number of local images found.

    Raises:
        ImagesNotFoundError: no local image was found, or fewer than :data:`MIN_FOUND_FRACTION`
            of them and not ``allow_missing``; the message says how many were found, in which
            folder, and one path that was tried.
    """
    base = Path(dataset.base_dir) if dataset.base_dir else None
    paths = [_local_path(ref, base) for ref in dataset.images["image"].astype(str) if not is_url(ref.strip())]
    missing = [path for path in paths if not path.is_file()]
    found = len(paths) - len(missing)
    if missing and (found == 0 or (found < MIN_FOUND_FRACTION * len(paths) and not allow_missing)):
        folder = Counter(path.parent for path in missing).most_common(1)[0][0]
        hint = "" if found == 0 else " (or --allow-missing-images to evaluate the ones found)"
        raise ImagesNotFoundError(
            f"{dataset.name}: found {found} of {len(paths)} images; looked in {folder} (e.g. {missing[0]}); "
            f"pass --images-dir with the folder that holds them, or fix the image paths{hint}")
    return found


def _local_path(ref: str, base: Path | None) -> Path:
    """Where :func:`clipeval.data.images.read_image` looks for a local reference."""
    path = Path(ref).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def retrieval_set_from_pairs(pairs: pd.DataFrame, name: str, image_column: str = "image",
                             caption_column: str = "caption", match_column: str | None = "match",
                             distinct_captions: bool = False) -> RetrievalSet:
    """Build a set from a pairs table: matched rows are the queries, distinct images the collection.

    By default every matched row is one query (an annotation: COCO's captions, a Flickr30k
    caption list, a table row), relevant to its own image only, as in the standard protocol
    (CLIP_benchmark, the published tables): two images whose annotations share a caption
    string give two queries. With ``distinct_captions`` each distinct caption string is one
    query instead, relevant to every image any of its rows matches.

    Captions of mismatched rows (``match_column`` False) that no matched row has become
    queries with no relevant image (distractors for image->text; counted, not averaged);
    their images join the collection. Without ``match_column`` every row is a match. Rows
    with no caption or no image cannot form a query or an item and are left out.

    Args:
        pairs: a pairs table (``read_pairs``).
        name: dataset name.
        image_column: image column of ``pairs``.
        caption_column: caption column of ``pairs``.
        match_column: boolean column marking true pairs, or None.
        distinct_captions: one query per distinct caption string instead of per matched row.

    Returns:
        The set; its queries carry ``text``, ``row_id`` (the row of ``pairs`` the query comes
        from: for a distinct caption or a distractor, its first row) and that row's source ids
        (every ``id`` / ``*_id`` column: COCO's ``image_id`` and ``annotation_id``); its images
        carry the source ids that have one value per image (COCO's ``image_id``).
    """
    usable = pairs[pairs[caption_column].notna() & pairs[image_column].notna()]
    captions, refs = usable[caption_column].astype(str), usable[image_column].astype(str)
    has_match = match_column is not None and match_column in usable
    matched = usable[match_column].astype(bool).to_numpy() if has_match else np.ones(len(usable), dtype=bool)
    images = pd.Index(pd.unique(refs))
    if distinct_captions:
        first_rows = captions.drop_duplicates()
        query_rows, texts = first_rows.index.to_numpy(), first_rows.to_numpy()
        query_of_row = pd.Index(texts).get_indexer(captions[matched])
    else:
        distractors = captions[~matched].drop_duplicates()
        distractors = distractors[~distractors.isin(captions[matched])]
        query_rows = np.concatenate([captions.index[matched].to_numpy(), distractors.index.to_numpy()])
        texts = np.concatenate([captions[matched].to_numpy(), distractors.to_numpy()])
        query_of_row = np.arange(int(matched.sum()))
    relevant = np.stack([query_of_row, images.get_indexer(refs[matched])], axis=1).reshape(-1, 2)
    ids = [column for column in usable.columns if (str(column) == "id" or str(column).endswith("_id"))
           and column not in (image_column, caption_column, "row_id")]
    queries = pd.DataFrame({"text": texts, "row_id": query_rows,
                            **{column: usable.loc[query_rows, column].to_numpy() for column in ids}})
    image_table = pd.DataFrame({"image": images})
    for column in ids:  # an id with one value per image (COCO's image_id)
        per_image = usable[column].groupby(refs.to_numpy(), sort=False)
        if per_image.nunique(dropna=False).le(1).all():
            image_table[column] = per_image.first().reindex(images).to_numpy()
    return RetrievalSet(name, queries, image_table, np.unique(relevant, axis=0), pairs.attrs.get("base_dir"))


def read_retrieval_tables(queries: str | Path, images: str | Path, relevance: str | Path, name: str | None = None,
                          text_column: str = "caption", image_column: str = "image", kind: str = "auto",
                          delimiter: str | None = None) -> RetrievalSet:
    """Build a set from three tables: queries (``query_id``, text), images (``image_id``, image),
    relevance (``query_id``, ``image_id``; one row per relevant pair), each read as ``kind`` and
    ``delimiter`` say (:class:`~clipeval.data.sources.SourceOptions`).

    Raises:
        PairsTableError: a missing column, or a relevance id absent from the queries/images.
    """
    reading = {"kind": kind, "delimiter": delimiter}
    query_table = read_pairs(queries, image_column="query_id", caption_column=text_column, **reading)
    image_table = read_pairs(images, image_column=image_column, caption_column="image_id", **reading)
    relevance_table = read_pairs(relevance, image_column="image_id", caption_column="query_id", **reading)
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


def load_retrieval_set(source: RetrievalSource, reading: SourceOptions = SourceOptions(),
                       cache_dir: str | Path = DEFAULT_CACHE_DIR) -> RetrievalSet:
    """Load a set from a pairs source, or from the three tables when ``relevance`` is given.

    A pairs source gives one query per matched row (``distinct_captions``: per distinct caption
    string; see :func:`retrieval_set_from_pairs`), read as ``reading`` says (the three tables with
    its columns, kind and delimiter); ``cache_dir`` is where
    images stored in a Hugging Face dataset are written.

    Raises:
        ValueError: neither a pairs source nor all three tables.
    """
    if source.relevance:
        if not (source.queries and source.images):
            raise ValueError("--relevance needs --queries and --images too")
        return read_retrieval_tables(source.queries, source.images, source.relevance, source.name,
                                     reading.caption_column, reading.image_column, reading.kind, reading.delimiter)
    if not source.pairs:
        raise ValueError("give a pairs source, or all three of queries, images and relevance tables")
    table = read_pairs(source.pairs, **asdict(reading), cache_dir=cache_dir)
    return retrieval_set_from_pairs(table, source.name, reading.image_column, reading.caption_column,
                                    distinct_captions=source.distinct_captions)
