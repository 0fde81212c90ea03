"""Read a pairs table (one row per image-caption pair) from any supported source.

Sources (the ``kind`` of :func:`read_pairs`, detected from the path when ``auto``):

- ``table``: CSV, TSV, Parquet, JSON Lines (or a JSON list of records), optionally
  compressed (``.gz``, ``.bz2``, ``.xz``, ``.zip``, ``.zst``); every column is carried through.
- ``folder``: a folder of images, searched recursively; the image's folder relative to the
  root is the ``label`` column (the class subfolder); a same-name ``.txt`` file next to an
  image is its caption.
- ``coco``: a COCO captions annotation file (``captions_*.json``): one row per caption.
- ``hf``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a folder), its
  Parquet files (a ``.parquet`` file, or a folder of them in the hub's ``data/<split>-*.parquet``
  layout), or a hub name written ``hf:owner/name`` (needs the network). Images stored in the dataset
  (bytes or PIL images) are written once to ``<cache_dir>/hf/`` as files named by the
  SHA-256 of their bytes, and the image column holds those absolute paths; image columns
  that hold paths or URLs are kept as they are.

Whatever the source, the table has a fresh 0..n-1 index, the image and caption columns under
the names asked for, and ``df.attrs["base_dir"]``, the folder relative image paths are
resolved against. A caption cell holding a list gives one row per caption, with a
``caption_index`` column. Missing captions and unreadable images are per-row statuses later
(see :data:`clipeval.data.images.STATUSES`); only an unusable table raises
:class:`PairsTableError`, whose message is one line saying what is wrong and how to fix it.

A source is read whole, so it is bounded as a whole, as a shard is (docs/security.md): its bytes
(``max_table_mb``: a file's size before it is read, what a compressed one decompresses to, counted as
it is read, a parquet file's uncompressed size from its footer, a dataset's arrow data, a folder's
caption files) and its rows (``max_table_rows``, each caption of a list counted: a parquet file's
footer, a COCO file's annotations, a folder's images and a dataset's rows before a row is read; CSV and
JSON Lines read no further than the cap). An xz table may ask for at most
:data:`~clipeval.data.options.MAX_XZ_MEMORY_BYTES` to decompress. Over a cap the source is refused with
one line naming the flag that raises it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import warnings
import zipfile

# the stdlib's reader behind gzip.GzipFile, bz2.BZ2File and lzma.LZMAFile, the one that takes a memory limit
# (requires-python pins 3.11; Python 3.14 moves it to compression._common._streams)
from _compression import DecompressReader
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.atomic import atomic_path
from clipeval.data.fetch import DEFAULT_CACHE_DIR
from clipeval.data.options import MAX_XZ_MEMORY_BYTES, PairsTableError, SourceOptions
from clipeval.paths import where

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".webp", ".bmp",
                              ".dib", ".tif", ".tiff", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
                              ".ico", ".jp2", ".j2k", ".qoi"})
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")
LABEL_COLUMN = "label"
_CANDIDATE_DELIMITERS = (",", "\t", ";", "|")
_COCO_FILE = re.compile(r"captions_(.+)\.json$")


def read_pairs(source: str | Path, image_column: str = "image", caption_column: str = "caption", *,
               kind: str = "auto", delimiter: str | None = None, images_dir: str | Path | None = None,
               split: str | None = None, max_table_mb: float = SourceOptions.max_table_mb,
               max_table_rows: int = SourceOptions.max_table_rows,
               cache_dir: str | Path = DEFAULT_CACHE_DIR) -> pd.DataFrame:
    """Read a pairs table from a file, a folder of images, a COCO file or a Hugging Face dataset.

    Args:
        source: the path (or ``hf:owner/name`` for a hub dataset).
        image_column, caption_column, kind, delimiter, images_dir, split, max_table_mb, max_table_rows: see
            :class:`SourceOptions`.
        cache_dir: the image cache root, where images stored in Hugging Face datasets are written.

    Returns:
        The table with every input column and a 0..n-1 index; ``df.attrs["base_dir"]`` is the
        folder relative image paths are resolved against.

    Raises:
        PairsTableError: unreadable or empty source, unknown format, wrong delimiter or a
            missing column.
    """
    options = SourceOptions(image_column, caption_column, kind, DELIMITER_NAMES.get(delimiter, delimiter),
                            images_dir, split, max_table_mb, max_table_rows)
    kind = detect_source_kind(source) if kind == "auto" else kind
    if kind not in SOURCE_READERS:
        raise PairsTableError(f"unknown source kind {kind!r}; use auto or one of {', '.join(SOURCE_READERS)}")
    table, base_dir = SOURCE_READERS[kind](str(source), options, Path(cache_dir))
    return _finish(table, Path(base_dir), str(source), options)


def detect_source_kind(source: str | Path) -> str:
    """Guess the source kind: ``hf:`` names and ``save_to_disk`` folders are ``hf``, other
    folders ``folder``, ``.json`` files holding one object ``coco``, the rest ``table``."""
    if str(source).startswith("hf:"):
        return "hf"
    path = Path(source)
    if path.is_dir():
        return "hf" if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file() else "folder"
    if _format_suffix(path) == ".json" and path.is_file() and _first_char(path) == "{":
        return "coco"
    return "table"


def load_table(source: str, options: SourceOptions, cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[pd.DataFrame, Path]:
    """Read a CSV/TSV/Parquet/JSON Lines table; image paths are relative to its folder."""
    path = Path(source)
    if not path.is_file():
        raise PairsTableError(f"{path}: no such file" + (" or folder" if not path.suffix else "")
                              + f" {where(path)} (a Hugging Face hub dataset is written hf:owner/name)")
    suffix = _format_suffix(path)
    delimiter = options.delimiter or DELIMITERS.get(suffix)
    check_table_bytes(path, path.stat().st_size, options)
    try:
        if delimiter is not None:
            with open_table_bytes(path, options) as stream:
                table = read_delimited(path, delimiter, options.image_column, options.caption_column,
                                       max_rows=options.max_table_rows + 1, stream=stream)
        elif suffix in (".parquet", ".pq"):
            _check_parquet_footer(path, options)
            table = pd.read_parquet(path)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            lines = suffix != ".json"  # a JSON list has no row limit: its bytes are bounded, its rows counted after
            with open_table_bytes(path, options) as stream:
                table = pd.read_json(stream, lines=lines, dtype=False,
                                     nrows=options.max_table_rows + 1 if lines else None)
        else:
            raise PairsTableError(f"{path}: unsupported table format {suffix!r}; use .csv, .tsv, .parquet, .jsonl "
                                  f"or .json, or pass --delimiter to read it as delimited text")
        check_table_rows(path, len(table), options)
    except PairsTableError:
        raise
    except UnicodeDecodeError as error:
        raise PairsTableError(f"{path}: not UTF-8 text ({error_reason(error)}); re-save it as UTF-8") from error
    except pd.errors.EmptyDataError as error:
        raise PairsTableError(f"{path}: the file is empty; a pairs table needs a header row and at least one pair") \
            from error
    except Exception as error:
        raise PairsTableError(f"{path}: cannot read the table ({error_reason(error)})") from error
    return table, path.parent.resolve()


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (by extension), recursively, sorted; hidden files and folders skipped."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found += [Path(folder) / name for name in sorted(files)
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def load_folder(source: str, options: SourceOptions, cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[pd.DataFrame, Path]:
    """List the images under a folder (recursively, sorted, hidden entries skipped).

    Each image's folder relative to the root becomes the ``label`` column (``""`` at the
    root); the text of a same-name ``.txt`` file is its caption (missing: NaN).
    """
    root = Path(source)
    if not root.is_dir():
        raise PairsTableError(f"{root}: no such folder {where(root)}")
    files = image_files(root)
    check_table_rows(root, len(files), options)
    captions = [file.with_suffix(".txt") for file in files]
    captions = [caption if caption.is_file() else None for caption in captions]  # a FIFO or device is no caption
    check_table_bytes(root, sum(caption.stat().st_size for caption in captions if caption), options,
                      "bytes of caption files")
    rows = []
    for file, caption in zip(files, captions):
        label = file.parent.relative_to(root).as_posix()
        rows.append({options.image_column: file.relative_to(root).as_posix(),
                     options.caption_column: _read_caption_file(caption) if caption else None,
                     LABEL_COLUMN: "" if label == "." else label})
    if not rows:
        raise PairsTableError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return pd.DataFrame(rows), root.resolve()


def load_coco(source: str, options: SourceOptions, cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[pd.DataFrame, Path]:
    """Read a COCO captions file: one row per annotation, in file order.

    Columns: ``image_id``, ``annotation_id``, the image column (the image's ``file_name``) and
    the caption column. A caption whose ``image_id`` has no image entry keeps its row with an
    empty image cell (status ``bad_reference`` later).
    """
    path = Path(source)
    try:
        check_table_bytes(path, path.stat().st_size, options)
        with open_table_bytes(path, options) as stream:
            data = json.load(io.TextIOWrapper(stream, encoding="utf-8-sig"))
    except FileNotFoundError as error:
        raise PairsTableError(f"{path}: no such file {where(path)}") from error
    except (OSError, ValueError) as error:
        raise PairsTableError(f"{path}: cannot read the COCO file ({error_reason(error)})") from error
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise PairsTableError(f"{path}: not a COCO captions file (needs top-level 'images' and 'annotations'); "
                              f"for a JSON table use JSON Lines or a list of records with --source-kind table")
    check_table_rows(path, len(data["annotations"]) if isinstance(data["annotations"], list) else 0, options)
    try:
        files = {image["id"]: image["file_name"] for image in data["images"]}
        rows = [{"image_id": note["image_id"], "annotation_id": note.get("id"),
                 options.image_column: files.get(note["image_id"]), options.caption_column: note.get("caption")}
                for note in data["annotations"]]
    except (KeyError, TypeError) as error:
        raise PairsTableError(f"{path}: malformed COCO file (an entry lacks {error_reason(error)}); "
                              f"images need id and file_name, annotations image_id and caption") from error
    columns = ["image_id", "annotation_id", options.image_column, options.caption_column]
    return pd.DataFrame(rows, columns=columns), _coco_images_dir(path, options.images_dir)


def load_hf_dataset(source: str, options: SourceOptions,
                    cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[pd.DataFrame, Path]:
    """Read a Hugging Face dataset: a ``save_to_disk`` folder, data files, or ``hf:owner/name`` from the hub.

    A hub dataset is downloaded with ``huggingface_hub.snapshot_download`` (or found in its cache:
    offline, a dataset downloaded before still loads) and read from that folder by
    ``datasets.load_dataset``, which follows the dataset card's configuration. Stored images
    (bytes or PIL images) are written to ``<cache_dir>/hf/<h[:2]>/<h>`` (``h``: SHA-256 of the
    bytes) and replaced by that path; other columns are carried through.
    """
    import datasets  # heavy: imported only for this source

    name = source.removeprefix("hf:")
    local = Path(name)
    from_hub = source.startswith("hf:") and not local.exists()
    if from_hub:
        local = _hub_dataset_snapshot(name)
    arrow_cache = str(Path(cache_dir) / "hf-datasets")
    if from_hub or (local.exists() and _parquet_files(local)):
        try:
            loaded = datasets.load_dataset(str(local) if local.is_dir() else "parquet",
                                           data_files=None if local.is_dir() else str(local),
                                           split=None if local.is_dir() else "train", cache_dir=arrow_cache)
        except Exception as error:
            raise PairsTableError(f"{name}: cannot read its data files as a dataset ({error_reason(error)})") from error
    elif local.is_dir():
        try:
            loaded = datasets.load_from_disk(str(local))
        except Exception as error:
            raise PairsTableError(f"{local}: not a dataset saved with save_to_disk ({error_reason(error)})") from error
    else:
        raise PairsTableError(f"{local}: no such folder or file {where(local)} (a Hugging Face hub dataset is "
                              "written hf:owner/name)")
    dataset = _pick_split(loaded, options.split, name)
    check_table_rows(name, dataset.num_rows, options)
    check_table_bytes(name, dataset.data.nbytes, options, "bytes of arrow data")  # memory-mapped: not read yet
    _check_columns(dataset.column_names, name, options)
    if isinstance(dataset.features[options.image_column], datasets.Image):
        dataset = dataset.cast_column(options.image_column, datasets.Image(decode=False))
    refs = [_save_hf_image(value, cache_dir)
            for batch in dataset.select_columns([options.image_column]).iter(batch_size=256)
            for value in batch[options.image_column]]
    table = dataset.remove_columns([options.image_column]).to_pandas()
    table.insert(dataset.column_names.index(options.image_column), options.image_column, refs)
    return table, (local.resolve() if local.is_dir() else local.resolve().parent)


def _hub_dataset_snapshot(name: str) -> Path:
    """The folder of a hub dataset's files: downloaded, or from the hub cache when offline.

    Raises:
        PairsTableError: it can be neither downloaded nor found in the cache.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, repo_type="dataset"))
    except Exception as error:
        raise PairsTableError(f"cannot load Hugging Face dataset {name!r} from the hub ({error_reason(error)}); "
                              f"where there is network: hf download {name} --repo-type dataset --local-dir <folder>, "
                              "and pass that folder") from error


def _parquet_files(local: Path) -> list[Path]:
    """The Parquet files of a local dataset: the file itself, or a folder's (none for a ``save_to_disk`` folder)."""
    if local.is_file():
        return [local] if _format_suffix(local) in (".parquet", ".pq") else []
    if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
        return []
    return sorted(local.rglob("*.parquet"))


SOURCE_READERS: dict[str, Callable[[str, SourceOptions, Path], tuple[pd.DataFrame, Path]]] = {
    "table": load_table,
    "folder": load_folder,
    "coco": load_coco,
    "hf": load_hf_dataset,
}


def _finish(table: pd.DataFrame, base_dir: Path, source: str, options: SourceOptions) -> pd.DataFrame:
    """Check the rows and columns, explode list captions, index 0..n-1, record ``base_dir``."""
    if len(table) == 0:
        raise PairsTableError(f"{source}: the table has no rows; a pairs table needs at least one image-caption pair")
    _check_columns([str(column) for column in table.columns], source, options)
    captions = table[options.caption_column]
    is_list = captions.map(lambda value: isinstance(value, (list, tuple, np.ndarray)))
    if is_list.any():
        check_table_rows(source, int(captions[is_list].map(len).sum() + (~is_list).sum()), options)
        table = table.explode(options.caption_column)
        table.insert(table.columns.get_loc(options.caption_column) + 1, "caption_index",
                     table.groupby(level=0).cumcount())
    table = table.reset_index(drop=True)
    table.attrs["base_dir"] = str(base_dir)
    return table


def _check_columns(found: list[str], source: str, options: SourceOptions) -> None:
    """Raise if the image or caption column is missing, suggesting a delimiter when one fits."""
    missing = [column for column in (options.image_column, options.caption_column) if column not in found]
    if not missing:
        return
    guess = _guess_delimiter(found[0], options.delimiter or ",") if len(found) == 1 else None
    if guess is not None:
        raise PairsTableError(f"{source}: found one column {found[0][:80]!r}, so the file looks "
                              f"{_delimiter_label(guess)}-separated; pass --delimiter {_delimiter_flag(guess)}")
    raise PairsTableError(f"{source}: missing column(s) {missing}; found {found[:20]}; "
                          f"pass --image-column/--caption-column to name them")


def read_delimited(path: Path, delimiter: str, image_column: str = "image", caption_column: str = "caption",
                   max_rows: int | None = None, stream: io.BufferedIOBase | None = None) -> pd.DataFrame:
    """Read delimited text (a pairs table, or a CSV/TSV shard); image and caption cells stay strings, only empty
    cells are NaN, the other columns are typed as pandas reads them. ``max_rows``: read no more rows than that;
    ``stream``: the file's bytes, already opened (:func:`open_table_bytes`), else ``path`` is read.

    A row with more fields than the header is an error, never silently cut (pandas only warns).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path if stream is None else stream, sep=delimiter, index_col=False,
                               keep_default_na=False, na_values=[""], dtype={image_column: str, caption_column: str},
                               nrows=max_rows)
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        guess = _guess_delimiter(_first_line(path), delimiter)
        hint = (f"the header looks {_delimiter_label(guess)}-separated; pass --delimiter {_delimiter_flag(guess)}"
                if guess else "quote fields that contain the delimiter")
        raise PairsTableError(f"{path}: some rows have more fields than the header ({error_reason(error)}); {hint}") \
            from error


def check_table_bytes(source: str | Path, size: int, options: SourceOptions, what: str = "bytes") -> None:
    """Raise :class:`PairsTableError` when a pairs source would hold more than ``options.max_table_mb``."""
    cap = int(options.max_table_mb * 2**20)
    if size > cap:
        raise PairsTableError(f"{source}: {size:,} {what}, over the pairs-table cap of {cap:,} bytes (--max-table-mb "
                              f"{options.max_table_mb:g}); not read. Pass a larger --max-table-mb to read it")


def check_table_rows(source: str | Path, rows: int, options: SourceOptions) -> None:
    """Raise :class:`PairsTableError` when a pairs source gives more than ``options.max_table_rows`` rows."""
    if rows > options.max_table_rows:
        raise PairsTableError(f"{source}: more than {options.max_table_rows:,} rows, over the pairs-table row cap "
                              f"(--max-table-rows {options.max_table_rows}); not read. Pass a larger "
                              "--max-table-rows to read it")


def open_table_bytes(path: Path, options: SourceOptions) -> io.BufferedReader:
    """A pairs file's bytes, decompressed as its suffix says, failing once more than ``options.max_table_mb`` is read.

    An ``.xz`` (or legacy ``.lzma`` stream under that name) is decompressed under a memory limit
    (:data:`MAX_XZ_MEMORY_BYTES`), which pandas' own reader lacks; a ``.zip`` must hold one file.

    Raises:
        PairsTableError: over the cap (while reading), an xz stream asking for more memory, a zip of
            several files, or a ``.zst`` table without the ``zstandard`` package.
    """
    handle = open(path, "rb")  # noqa: SIM115 -- closed with the returned reader
    try:
        inner = _decompressing(path, handle)
    except BaseException:
        handle.close()
        raise
    return io.BufferedReader(_CappedReader(inner, handle, path, options))


def _decompressing(path: Path, handle):
    """``handle``'s bytes through the decompressor ``path``'s suffix names (none: ``handle`` itself)."""
    compression = path.suffix.lower()
    if compression == ".gz":
        return gzip.GzipFile(fileobj=handle, mode="rb")
    if compression == ".bz2":
        return bz2.BZ2File(handle)
    if compression == ".xz":
        return io.BufferedReader(DecompressReader(handle, lzma.LZMADecompressor, trailing_error=lzma.LZMAError,
                                                  memlimit=MAX_XZ_MEMORY_BYTES))
    if compression == ".zip":
        archive = zipfile.ZipFile(handle)
        names = [name for name in archive.namelist() if not name.endswith("/")]
        if len(names) != 1:
            raise PairsTableError(f"{path}: a zipped table must hold one file; it holds {len(names)}")
        return archive.open(names[0])
    if compression == ".zst":
        try:
            import zstandard
        except ImportError as error:
            raise PairsTableError(f"{path}: reading a .zst table needs the zstandard package "
                                  "(pip install zstandard), or decompress it first") from error
        return zstandard.ZstdDecompressor().stream_reader(handle)  # windows over 128 MiB refused by zstd itself
    return handle


class _CappedReader(io.RawIOBase):
    """A pairs file's (decompressed) bytes as pandas or json reads them, counted against the byte cap."""

    def __init__(self, inner, handle, path: Path, options: SourceOptions):
        self._inner, self._handle, self._path, self._options = inner, handle, path, options
        self._left = int(options.max_table_mb * 2**20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._inner.read(min(len(buffer), self._left + 1))
        except lzma.LZMAError as error:
            if "memory" not in str(error).lower():
                raise
            raise PairsTableError(f"{self._path}: the xz stream needs more than {MAX_XZ_MEMORY_BYTES:,} bytes of "
                                  "memory to decompress; not read (decompress it, or recompress it with xz -9 or "
                                  "less)") from error
        self._left -= len(data)
        if self._left < 0:
            cap = int(self._options.max_table_mb * 2**20)
            raise PairsTableError(f"{self._path}: more than {cap:,} bytes once decompressed, over the pairs-table cap "
                                  f"(--max-table-mb {self._options.max_table_mb:g}); not read further. Pass a larger "
                                  "--max-table-mb to read it")
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            if self._inner is not self._handle:
                self._inner.close()
        finally:
            self._handle.close()
            super().close()


def _check_parquet_footer(path: Path, options: SourceOptions) -> None:
    """Refuse a parquet table from its footer: its rows, and the bytes its row groups take once read."""
    import pyarrow.parquet as pq  # pandas' parquet engine

    metadata = pq.read_metadata(path)
    check_table_rows(path, metadata.num_rows, options)
    check_table_bytes(path, sum(metadata.row_group(group).total_byte_size for group in range(metadata.num_row_groups)),
                      options, "bytes once read (from its footer)")


def _guess_delimiter(header: str, used: str) -> str | None:
    """The candidate delimiter most frequent in a header line, if it is not the one used."""
    counts = {candidate: header.count(candidate) for candidate in _CANDIDATE_DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] and best != used else None


def _delimiter_label(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[delimiter]


def _delimiter_flag(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _format_suffix(path: Path) -> str:
    """The format suffix, looking past a compression suffix (``pairs.csv.gz`` -> ``.csv``)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _first_char(path: Path) -> str:
    with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
        return handle.read(4096).lstrip()[:1]


def _first_line(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
            return handle.readline()
    except OSError:  # compressed files: no guess
        return ""


def _read_caption_file(path: Path) -> str | None:
    """A caption file's text (UTF-8; undecodable bytes become U+FFFD), or ``None`` if absent."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace").strip()
    except FileNotFoundError:
        return None


def _coco_images_dir(annotations: Path, images_dir: str | Path | None) -> Path:
    """COCO layout: ``annotations/captions_val2017.json`` beside ``val2017/``."""
    if images_dir is not None:
        if not Path(images_dir).expanduser().is_dir():
            raise PairsTableError(f"--images-dir {images_dir}: no such folder {where(images_dir)}")
        return Path(images_dir).expanduser().resolve()
    match = _COCO_FILE.search(annotations.name)
    beside = annotations.resolve().parent.parent / match.group(1) if match else None
    return beside if beside is not None and beside.is_dir() else annotations.resolve().parent


def _pick_split(loaded, split: str | None, name: str):
    """A Dataset as is; from a DatasetDict the named split, or its only one."""
    if not hasattr(loaded, "keys"):
        return loaded
    splits = list(loaded.keys())
    if split is None and len(splits) == 1:
        return loaded[splits[0]]
    if split in splits:
        return loaded[split]
    raise PairsTableError(f"{name}: has splits {splits}; pass --split with one of them")


def _save_hf_image(value: object, cache_dir: Path) -> str | None:
    """Turn one image cell of a dataset into an image reference (a path or URL)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        return None
    if data is None:
        return path
    return save_image_bytes(data, cache_dir, "hf")


def save_image_bytes(data: bytes, cache_dir: str | Path, folder: str) -> str:
    """Write image bytes once to ``<cache_dir>/<folder>/<h[:2]>/<h>`` (``h``: their SHA-256); return that path.

    For images stored inside a dataset (Hugging Face, webdataset tars): the file's name is its
    content, so a re-run writes nothing and equal images share one file.
    """
    digest = hashlib.sha256(data).hexdigest()
    file = Path(cache_dir).resolve() / folder / digest[:2] / digest
    if not file.is_file():
        with atomic_path(file) as temp:
            temp.write_bytes(data)
    return str(file)


def error_reason(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line errors."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
