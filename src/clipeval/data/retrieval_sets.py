"""Retrieval sets: text queries, an image collection and which (query, image) pairs are relevant.

A :class:`RetrievalSet` may give a query several relevant images, or none (reported, not
dropped). It is read from explicit tables (:func:`read_retrieval_tables`: queries, images,
relevance) or built from any pairs source (:func:`retrieval_set_from_pairs`: each matched row
is a query relevant to its own image, distinct images are the collection; or, on request, one
query per distinct caption string).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.fetch import DEFAULT_CACHE_DIR, is_url
from clipeval.data.sources import PairsTableError, SourceOptions, read_pairs

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
        The set; its queries carry ``text`` and ``row_id`` (the row of ``pairs`` the query comes
        from: for a distinct caption or a distractor, its first row).
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
    queries = pd.DataFrame({"text": texts, "row_id": query_rows})
    return RetrievalSet(name, queries, pd.DataFrame({"image": images}), np.unique(relevant, axis=0),
                        pairs.attrs.get("base_dir"))


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


@dataclass(frozen=True)
class RetrievalSource:
    """Where a retrieval set comes from (the command line's flags are these fields): a pairs source, or three tables.

    Attributes:
        name: the set's name (the ``dataset`` column of ``metrics.csv``).
        pairs: any pairs source: every row (with ``match`` true when the column exists) is a query
            relevant to its own image; the distinct images are the collection.
        queries, images, relevance: tables of ``query_id`` and caption, of ``image_id`` and image, and
            one row per relevant ``query_id``, ``image_id`` pair (a query may have many relevant images).
        distinct_captions: with ``pairs``: one query per distinct caption string, relevant to every
            image it is matched with (default: one query per row, as in COCO's protocol).
    """

    name: str = field(default="retrieval", metadata={"flag": "--dataset", "help": "the set's name in metrics.csv"})
    pairs: str | None = field(default=None, metadata={
        "help": "any pairs source (table, COCO captions_*.json, HF dataset...): every row (with match=True if that "
                "column exists) is a query relevant to its own image; distinct images are the collection"})
    queries: str | None = field(default=None, metadata={"help": "table with query_id and the caption column"})
    images: str | None = field(default=None, metadata={"help": "table with image_id and the image column"})
    relevance: str | None = field(default=None, metadata={
        "help": "table with query_id, image_id: one row per relevant pair"})
    distinct_captions: bool = field(default=False, metadata={
        "help": "with --pairs: one query per distinct caption string, relevant to every image it is matched with"})

    def files(self) -> list[str]:
        """The files the set is read from (for the manifest)."""
        return [path for path in (self.pairs, self.queries, self.images, self.relevance) if path]


def load_retrieval_set(source: RetrievalSource, reading: SourceOptions = SourceOptions(),
                       cache_dir: str | Path = DEFAULT_CACHE_DIR) -> RetrievalSet:
    """Load a set from a pairs source, or from the three tables when ``relevance`` is given.

    A pairs source gives one query per matched row (``distinct_captions``: per distinct caption
    string; see :func:`retrieval_set_from_pairs`), read as ``reading`` says; ``cache_dir`` is where
    images stored in a Hugging Face dataset are written.

    Raises:
        ValueError: neither a pairs source nor all three tables.
    """
    if source.relevance:
        if not (source.queries and source.images):
            raise ValueError("--relevance needs --queries and --images too")
        return read_retrieval_tables(source.queries, source.images, source.relevance, source.name,
                                     reading.caption_column, reading.image_column)
    if not source.pairs:
        raise ValueError("give a pairs source, or all three of queries, images and relevance tables")
    table = read_pairs(source.pairs, **asdict(reading), cache_dir=cache_dir)
    return retrieval_set_from_pairs(table, source.name, reading.image_column, reading.caption_column,
                                    distinct_captions=source.distinct_captions)
