"""The data layer's options, limits and the pairs-table error, importable without numpy, pandas or Pillow
(the command line builds its flags from these, so ``--help`` and argument errors answer at once)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MAX_PIXELS = 89_478_485  # PIL's own default decompression-bomb limit, made explicit
# the largest shard member read (bytes), as FetchOptions.max_download_mb for a download: the default of
# read_shard's max_member_bytes and of ShardOptions.max_member_mb
MAX_MEMBER_BYTES = 50 * 2**20
# the limits of one shard read whole (ShardLimits' defaults): far above honest shards (Hugging Face's parquet shards
# are about 500 MB, img2dataset's tars 10,000 samples), far below what a hostile one would cost
MAX_SHARD_BYTES = 2**30  # decompressed bytes of a compressed tar, bytes held from any shard
MAX_SHARD_ROWS = 1_000_000
MAX_SAMPLE_CAPTIONS = 1_000
MAX_TAR_HEADER_BYTES = 2**20  # one pax header or GNU long name/link (an honest one holds a path: a few KiB)
MAX_JSON_BYTES = 2**20  # a tar sample's json (parsed, it may take 20 times its size; an honest one is a few KiB)
MAX_XZ_MEMORY_BYTES = 128 * 2**20  # what an xz/lzma tar may ask for to decompress (`xz -9` needs 65 MiB)
# the limits of a pairs table (SourceOptions' defaults): a whole data set in one file, so above the shard caps (CC3M's
# TSV is 3.3 million rows), far below what a small hostile file could cost (compressed, or many rows of a few bytes)
MAX_TABLE_BYTES = 2 * 2**30  # on disk, decompressed, or held once read (a parquet file's footer)
MAX_TABLE_ROWS = 10_000_000  # rows given, each caption of a list counted
SOURCE_KINDS = ("table", "folder", "coco", "hf")


@dataclass(frozen=True)
class SceneSizes:
    """How many synthetic scenes ``make-scenes`` draws, their size and seed (``generate_scenes``' defaults)."""

    n_train: int = field(default=5000, metadata={"flag": "--train", "help": "training scenes"})
    n_val: int = field(default=400, metadata={"flag": "--val", "help": "validation scenes"})
    n_test: int = field(default=600, metadata={"flag": "--test", "help": "test scenes"})
    image_size: int = field(default=64, metadata={"help": "image side in pixels"})
    seed: int = 0


class PairsTableError(ValueError):
    """The pairs table cannot be used; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class ShardLimits:
    """What one shard may cost to read, beyond the byte cap of each member (docs/security.md).

    Attributes:
        shard_bytes: the bytes a compressed tar may decompress to (members skipped included), and the
            bytes any shard may hold in memory (tar members kept, a CSV file, a parquet file's
            uncompressed columns); over it the shard fails.
        rows: the rows a shard may give; over it the shard fails.
        captions: the captions one grouped sample may list; over it the sample is one row with the
            status ``too_many_captions``.
        header_bytes: the size of one tar pax header or GNU long name, checked before it is read; over
            it (or a malformed pax header) the shard fails.
        xz_memory: the memory an xz or legacy lzma tar may ask for to decompress (its dictionary,
            declared in its header); more fails the shard before it is read.
        json_bytes: the size of a tar sample's ``json`` member, checked before it is read and parsed;
            over it the sample gets ``member_too_large``.
    """

    shard_bytes: int = MAX_SHARD_BYTES
    rows: int = MAX_SHARD_ROWS
    captions: int = MAX_SAMPLE_CAPTIONS
    header_bytes: int = MAX_TAR_HEADER_BYTES
    xz_memory: int = MAX_XZ_MEMORY_BYTES
    json_bytes: int = MAX_JSON_BYTES


@dataclass(frozen=True)
class SourceOptions:
    """How a pairs source is read (the command line's flags are these fields).

    Attributes:
        image_column: the column with image paths or URLs (the name the table gets for folder and
            COCO sources).
        caption_column: the column with captions (likewise).
        kind: ``auto`` or one of :data:`SOURCE_KINDS` (``table``, ``folder``, ``coco``, ``hf``).
        delimiter: the field separator of a delimited text table; ``None`` picks it from the
            suffix (``,`` for ``.csv``, tab for ``.tsv``/``.tab``). ``tab``, ``\\t``, ``comma``,
            ``semicolon`` and ``pipe`` are accepted as names.
        images_dir: the folder of a COCO source's images.
        split: the split of a Hugging Face dataset with several.
        max_table_mb: the MiB a pairs source may hold: a file's size on disk, the bytes a compressed one
            decompresses to, a parquet file's uncompressed size (from its footer), a Hugging Face dataset's
            arrow data, a folder's caption files; over it the source is refused unread (docs/security.md).
        max_table_rows: the rows a pairs source may give, each caption of a list counted; over it the
            source is refused (a parquet file, a COCO file, a folder or a dataset before its rows are read).
    """

    image_column: str = field(default="image", metadata={"help": "the column with image paths or URLs"})
    caption_column: str = field(default="caption", metadata={"help": "the column with captions"})
    kind: str = field(default="auto", metadata={"flag": "--source-kind", "choices": ("auto", *SOURCE_KINDS),
                                                "help": "how to read the source (auto: from its form)"})
    delimiter: str | None = field(default=None, metadata={
        "help": "field separator of delimited text: ',', ';', tab, '|'"})
    images_dir: str | None = field(default=None, metadata={"help": "folder of a COCO file's images"})
    split: str | None = field(default=None, metadata={"help": "split of a Hugging Face dataset"})
    max_table_mb: float = field(default=MAX_TABLE_BYTES / 2**20, metadata={
        "help": "most MiB a pairs source may hold (on disk, decompressed, or once read); a larger one is refused"})
    max_table_rows: int = field(default=MAX_TABLE_ROWS, metadata={
        "help": "most rows a pairs source may give (each caption of a list counted); more is refused"})

    def what_is_read(self) -> dict:
        """The fields that say what the source gives: all but the caps, which only refuse a source (what an index
        records of how its source was read, so that a cap raised, or added by a later release, is the same source)."""
        return {name: value for name, value in asdict(self).items() if name not in ("max_table_mb", "max_table_rows")}


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
