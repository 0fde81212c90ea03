"""The index builder's options: one dataclass, the flags of ``clipeval index`` (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field

THUMBNAIL_SIDE = 256  # a thumbnail's long side in pixels (docs/finder.md)


@dataclass(frozen=True)
class IndexOptions:
    """How an index folder is built (see :func:`clipeval.finder.index.build_index`).

    Attributes:
        id_column: the source column holding each row's id; ``None`` derives ids from the image references.
            Either way an id is made a safe, flat name and unique (a repeat gets ``-<row>``).
        ann: ``auto`` builds an approximate (faiss) index where :func:`clipeval.finder.ann.choose_ann` says the
            collection is too large for exact search; ``never`` keeps exact search only; ``always`` builds one
            whatever the size (to compare exact and approximate search on a small collection: searches stay
            exact unless asked, ``search --approximate``).
        ann_memory_mb: the memory budget the approximate index is chosen for (MiB).
        thumbnail_side: the thumbnails' long side in pixels (never enlarged).
        block: images read, thumbnailed and embedded per step (memory holds one block of image bytes).
    """

    id_column: str | None = field(default=None, metadata={
        "help": "the column holding each row's id (default: ids from the image references)"})
    ann: str = field(default="auto", metadata={
        "choices": ("auto", "never", "always"),
        "help": "auto: build an approximate (faiss) index when the collection is too large for exact search"})
    ann_memory_mb: float = field(default=4096.0, metadata={
        "help": "memory budget (MiB) the approximate index is chosen for"})
    thumbnail_side: int = field(default=THUMBNAIL_SIDE, metadata={"cli": False})
    block: int = field(default=512, metadata={"cli": False})


DEFAULT_HOST = "127.0.0.1"  # the finder's page: this machine only
DEFAULT_PORT = 8765
