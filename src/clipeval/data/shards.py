"""Sharded inputs: lists of shard files, each read whole into a table of samples.

A shard is one file of image-caption samples, the unit of work and of resuming in a sharded
run (docs/sharded-runs.md):

* **parquet** or **CSV/TSV**: one row per sample. The image column holds a path (relative to
  the shard's folder), a URL, the image bytes, or a Hugging Face ``{"bytes", "path"}`` record;
* **webdataset tar**: files grouped by key (the name up to the first dot of the basename): an
  image (``jpg``, ``png``, ``webp``...: :data:`IMAGE_EXTENSIONS`), the caption in ``txt`` (or ``caption`` /
  ``text``), and any ``json`` fields, which become columns.

Every sample becomes a row, in file order, with a ``uid``: the shard's own ``uid`` column (or
a webdataset ``json``'s ``uid``) when it has one, else ``<shard name>/<key or row number>``.
A sample with no image or no caption keeps its row (scoring gives it a status); a shard that
cannot be read at all raises :class:`ShardReadError`.

Shards are web data and may be hostile, so:

* **a byte cap per member** (:data:`MAX_MEMBER_BYTES`, or ``max_member_bytes``; the command
  line's ``--max-member-mb``): a tar member larger than the cap is refused from its header,
  before any byte of it is read, and no member is ever read past the cap, whatever the tar's
  compression (gzip, bz2 and xz tars are read whatever their name). The sample keeps its row,
  with the status ``member_too_large``; an image cell of a parquet shard over the cap gets the
  same status;
* **safe uids** (:func:`safe_uid`): no ``..`` part, no leading ``/``, no backslash or control
  character, whatever the member names or the ``uid`` column hold;
* **unique uids**: a uid an earlier row of the shard already has (a tar whose files are not
  grouped by key, a ``uid`` column with repeats, two names that make the same safe uid) keeps
  its row, with the uid ``<uid>#<row>`` and the status ``duplicate_uid``, whose reason names
  the first row. Nothing is silently dropped or overwritten. A key's repeated extension in a
  tar (two ``a.txt`` in a row) starts a new sample rather than replacing the first file.

The statuses reach scoring through the image cell: a refused sample's cell is a
:class:`~clipeval.data.images.FailedCell`, which :func:`~clipeval.data.images.read_image_bytes`
reports without reading anything.
"""

from __future__ import annotations

import contextlib
import glob
import io
import itertools
import json
import lzma
import re
import tarfile

# the stdlib's reader behind gzip.GzipFile, bz2.BZ2File and lzma.LZMAFile, the one that takes a memory limit
# (requires-python pins 3.11; Python 3.14 moves it to compression._common._streams)
from _compression import DecompressReader
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from clipeval.atomic import atomic_path
from clipeval.data.images import FailedCell
from clipeval.data.sources import IMAGE_EXTENSIONS as FOLDER_IMAGE_EXTENSIONS
from clipeval.data.sources import read_delimited

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
TAR_SUFFIXES = (".tar",)
SHARD_SUFFIXES = TABLE_SUFFIXES + TAR_SUFFIXES
# a sample's image: any extension a folder source takes as an image
IMAGE_EXTENSIONS = tuple(sorted(extension.lstrip(".") for extension in FOLDER_IMAGE_EXTENSIONS))
CAPTION_EXTENSIONS = ("txt", "caption", "text")
# the largest shard member read (bytes), as FetchOptions.max_download_mb for a download: the default of
# read_shard's max_member_bytes and of ShardOptions.max_member_mb
MAX_MEMBER_BYTES = 50 * 2**20
# the most memory an xz tar may ask for to decompress (its dictionary: `xz -9` needs 65 MiB); more is refused, since
# skipping a member fills the dictionary however large the stream declares it (gzip and bz2 windows are small)
XZ_MEMORY_LIMIT = 128 * 2**20
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BRACE = re.compile(r"\{([^{}]*)\}")


class ShardReadError(OSError):
    """A shard that cannot be read at all (missing, not a tar/parquet/CSV, corrupt container)."""


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{00000..00099}`` ranges (zero padding kept) and ``{a,b}`` lists, as in a shell.

    Args:
        pattern: a path pattern, e.g. ``shards/shard-{00000..00003}.tar``.

    Returns:
        Every expansion, in order.

    Raises:
        ValueError: a range whose ends are not integers.
    """
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    body = match.group(1)
    if ".." in body:
        first, last = body.split("..", 1)
        if not (first.strip().lstrip("-").isdigit() and last.strip().lstrip("-").isdigit()):
            raise ValueError(f"cannot expand {{{body}}} in {pattern!r}: a range needs integer ends, e.g. {{0..9}}")
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        step = 1 if int(last) >= int(first) else -1
        items = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        items = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for item in items for expanded in expand_braces(head + item + tail)]


def list_shards(patterns: list[str] | str) -> list[Path]:
    """The shard files that ``patterns`` name, in the given order, each once.

    Each pattern is brace-expanded (:func:`expand_braces`); an expansion with ``*``, ``?`` or
    ``[`` is globbed (sorted); a folder stands for its shard files (sorted). A plain name
    that does not exist is kept, so that a run reports it as an unreadable shard.

    Raises:
        ValueError: nothing at all matched, or a globbed file is not a shard format.
    """
    found: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        for expanded in expand_braces(pattern):
            path = Path(expanded).expanduser()
            if any(char in expanded for char in "*?["):
                found += [Path(name) for name in sorted(glob.glob(str(path))) if Path(name).is_file()]
            elif path.is_dir():
                found += sorted(child for child in path.iterdir() if child.suffix.lower() in SHARD_SUFFIXES)
            else:
                found.append(path)
    shards = list(dict.fromkeys(found))
    if not shards:
        raise ValueError(f"no shard matches {patterns!r}; give shard files (.tar, .parquet, .csv, .tsv), "
                         "a folder of them, a glob or a brace pattern like shard-{00000..00009}.tar")
    odd = [str(path) for path in shards if path.suffix.lower() not in SHARD_SUFFIXES]
    if odd:
        raise ValueError(f"not a shard format ({', '.join(SHARD_SUFFIXES)}): {', '.join(odd[:3])}")
    return shards


def shard_name(path: str | Path) -> str:
    """The name a shard's outputs are filed under: its file name without the format suffix."""
    path = Path(path)
    return path.name[:-len(path.suffix)] if path.suffix.lower() in SHARD_SUFFIXES else path.name


def read_shard(path: str | Path, image_column: str = "image", caption_column: str = "caption",
               uid_column: str = "uid", max_member_bytes: int | None = None) -> pd.DataFrame:
    """Read one shard whole: one row per sample, in file order.

    Args:
        path: a ``.parquet``, ``.csv``, ``.tsv`` or webdataset ``.tar`` file (plain, gzip, bz2 or xz).
        image_column: the column holding the image (for a tar: where the image bytes go).
        caption_column: the caption column (for a tar: where the ``txt`` goes).
        uid_column: the column with each sample's unique id, when the shard has one.
        max_member_bytes: the byte cap of one tar member or image cell (default
            :data:`MAX_MEMBER_BYTES`); a sample over it gets ``member_too_large``.

    Returns:
        The samples, with a ``uid`` column (safe, unique strings: :func:`shard_uids`) and
        ``attrs["base_dir"]`` (the shard's folder, for relative image paths). Image cells hold
        a path/URL string, bytes, None, or a :class:`~clipeval.data.images.FailedCell` for a
        sample refused here (``member_too_large``, ``duplicate_uid``).

    Raises:
        ShardReadError: the shard is missing, unreadable, or lacks the image or caption column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    cap = MAX_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
    try:
        if suffix in TAR_SUFFIXES:
            table = _read_webdataset(path, image_column, caption_column, cap)
        elif suffix == ".parquet":
            table = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            table = read_delimited(path, "\t" if suffix == ".tsv" else ",", image_column, caption_column)
        else:
            raise ShardReadError(f"{path}: not a shard format ({', '.join(SHARD_SUFFIXES)})")
    except ShardReadError:
        raise
    except Exception as error:  # a corrupt container may raise anything; the run goes on
        raise ShardReadError(f"{path}: {type(error).__name__}: {error}") from error
    missing = [column for column in (image_column, caption_column) if column not in table]
    if missing:
        raise ShardReadError(f"{path}: no column(s) {missing}; it has {list(table.columns)}")
    table = table.reset_index(drop=True)
    cells = [_capped(_image_cell(value), cap) for value in table[image_column]]
    wanted = _wanted_uids(table, shard_name(path), uid_column)
    uids, first_rows = _unique_uids(wanted)
    for row, first in first_rows.items():
        if not isinstance(cells[row], FailedCell):  # a sample already refused keeps its own status
            cells[row] = FailedCell(cells[row], "duplicate_uid",
                                    f"uid {wanted[row]} is also row {first}'s (the first keeps it); this row is "
                                    f"{uids[row]} and is not scored")
    table[image_column] = pd.Series(cells, dtype=object)
    table["uid"] = pd.Series(uids, dtype=object)
    table.attrs["base_dir"] = str(path.parent)
    return table


def safe_uid(text: object) -> str:
    """``text`` as a safe name: no ``..`` part, no leading ``/``, no backslash, control or non-ASCII character.

    Path parts stay apart by ``/``; empty and ``.`` parts are dropped (a leading ``/``, ``./``,
    ``//``), a ``..`` part is written ``%2E%2E``, and every character but ASCII letters, digits
    and ``-_.~`` is percent-encoded as UTF-8 (``%`` itself too), so ``../../a b`` gives
    ``%2E%2E/%2E%2E/a%20b``. Texts that differ only in dropped parts (``./a`` and ``a``) give the
    same name: :func:`shard_uids` makes such a clash unique and :func:`read_shard` reports it.
    Nothing left gives ``_``.
    """
    parts = [part for part in str(text).split("/") if part not in ("", ".")]
    return "/".join("%2E%2E" if part == ".." else quote(part, safe="") for part in parts) or "_"


def shard_uids(table: pd.DataFrame, name: str, uid_column: str = "uid") -> pd.Series:
    """Each sample's unique id, a :func:`safe_uid`: its ``uid_column`` when every row has one, else
    ``<name>/<webdataset key>``, else ``<name>/<row>``.

    A uid an earlier row already has becomes ``<uid>#<row>`` (``#`` is never in a safe uid, so the
    result is unique); :func:`read_shard` gives such rows the status ``duplicate_uid``.
    """
    return pd.Series(_unique_uids(_wanted_uids(table, name, uid_column))[0], dtype=object)


def _wanted_uids(table: pd.DataFrame, name: str, uid_column: str) -> list[str]:
    """Each row's safe uid before duplicates are made unique."""
    if uid_column in table and table[uid_column].notna().all():
        return [safe_uid(value) for value in table[uid_column].astype(str)]
    name = safe_uid(name)
    if "__key__" in table:
        return [f"{name}/{safe_uid(key)}" for key in table["__key__"].astype(str)]
    return [f"{name}/{row}" for row in range(len(table))]


def _unique_uids(wanted: list[str]) -> tuple[list[str], dict[int, int]]:
    """The uids made unique (a repeat becomes ``<uid>#<row>``) and, per repeated row, the row that has the uid."""
    first_row: dict[str, int] = {}
    uids, repeats = [], {}
    for row, uid in enumerate(wanted):
        if uid in first_row:
            repeats[row] = first_row[uid]
            uid = f"{uid}#{row}"
        else:
            first_row[uid] = row
        uids.append(uid)
    return uids, repeats


def _capped(cell: object, cap: int) -> object:
    """An image cell of more than ``cap`` bytes (a parquet shard's image bytes) as ``member_too_large``."""
    if isinstance(cell, bytes) and len(cell) > cap:
        return FailedCell(None, "member_too_large",
                          f"the image cell holds {len(cell):,} bytes, over the {cap:,}-byte member cap")
    return cell


def _image_cell(value: object) -> str | bytes | FailedCell | None:
    """A path/URL string or image bytes; a Hugging Face image record gives its bytes (or its path)."""
    if isinstance(value, FailedCell):
        return value
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _tar_members(archive: tarfile.TarFile) -> Iterator[tuple[int, str, str, tarfile.TarInfo]]:
    """webdataset's grouping of a tar: ``(sample number, key, extension, member)`` per file.

    A sample is a run of consecutive files sharing a key, the member name up to the first dot
    of its last path part; the extension (the rest) is lower-cased. An extension the run already
    has starts a new sample (its file is never dropped or overwritten). Directories, links and
    files with no extension are skipped.
    """
    number, key, extensions = -1, None, set()
    for member in archive:
        folder, _, base = member.name.rpartition("/")
        stem, dot, extension = base.partition(".")
        if not member.isfile() or not dot:
            continue
        member_key, extension = (f"{folder}/{stem}" if folder else stem), extension.lower()
        if member_key != key or extension in extensions:
            number, key, extensions = number + 1, member_key, set()
        extensions.add(extension)
        yield number, member_key, extension, member


def _tar_samples(path: str | Path, cap: int) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A tar's samples: ``(key, {extension: content}, [reason per member over the cap])``.

    A member's size is read from its header: one over ``cap`` is skipped without reading a byte
    of it, and no read asks for more than ``cap + 1`` bytes, so a compressed tar cannot inflate
    one member in memory.
    """
    with _open_tar(path) as archive:
        number, key, files, over = None, None, {}, []
        for member_number, member_key, extension, member in _tar_members(archive):
            if member_number != number and number is not None:
                yield key, files, over
                files, over = {}, []
            number, key = member_number, member_key
            data = archive.extractfile(member).read(cap + 1) if member.size <= cap else b""
            if member.size > cap or len(data) > cap:
                over.append(f"member {member.name!r} is {max(member.size, len(data)):,} bytes, over the "
                            f"{cap:,}-byte member cap; not read")
            else:
                files[extension] = data
        if number is not None:
            yield key, files, over


@contextlib.contextmanager
def _open_tar(path: str | Path) -> Iterator[tarfile.TarFile]:
    """A tar opened for reading, plain, gzip, bz2 or xz whatever its name; xz under :data:`XZ_MEMORY_LIMIT`."""
    with open(path, "rb") as handle:
        xz = handle.read(len(_XZ_MAGIC)) == _XZ_MAGIC
        handle.seek(0)
        stream = (io.BufferedReader(DecompressReader(handle, lzma.LZMADecompressor, trailing_error=lzma.LZMAError,
                                                     memlimit=XZ_MEMORY_LIMIT)) if xz else handle)
        try:
            with tarfile.open(fileobj=stream, mode="r:" if xz else "r:*") as archive:
                yield archive
        except lzma.LZMAError as error:
            if "memory" not in str(error).lower():
                raise
            raise ShardReadError(f"{path}: the xz stream needs more than {XZ_MEMORY_LIMIT:,} bytes of memory to "
                                 f"decompress (clipeval.data.shards.XZ_MEMORY_LIMIT); not read") from error


def iter_tar_samples(path: str | Path, max_member_bytes: int | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A webdataset tar's samples in file order, one at a time: ``(key, {extension: content})``.

    Args:
        path: the tar (plain, gzip, bz2 or xz).
        max_member_bytes: the byte cap of one member (default :data:`MAX_MEMBER_BYTES`).

    Raises:
        ShardReadError: a member is over the cap (checked from its header; nothing of it is read).
        tarfile.TarError, OSError, EOFError: the tar cannot be read.
    """
    cap = MAX_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
    for key, files, over in _tar_samples(path, cap):
        if over:
            raise ShardReadError(f"{path}: sample {key!r}: {'; '.join(over)}")
        yield key, files


def _read_webdataset(path: Path, image_column: str, caption_column: str, cap: int) -> pd.DataFrame:
    rows = []
    for key, files, over in _tar_samples(path, cap):
        row: dict[str, object] = {"__key__": key}
        if "json" in files:
            try:
                fields = json.loads(files["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                fields = {"json_error": f"{type(error).__name__}: {error}"}
            if isinstance(fields, dict):
                row.update({name: value for name, value in fields.items()
                            if value is None or isinstance(value, (str, int, float, bool))})
        image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
        row[image_column] = FailedCell(image, "member_too_large", "; ".join(over)) if over else image
        caption = next((files[ext] for ext in CAPTION_EXTENSIONS if ext in files), None)
        if caption is not None:
            row[caption_column] = caption.decode("utf-8", errors="replace").strip()
        else:
            row.setdefault(caption_column, None)
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("__key__", image_column, caption_column):
        if column not in table:
            table[column] = pd.Series(dtype=object)
    return table


def write_shards(pairs: pd.DataFrame, out_dir: str | Path, n_shards: int, shard_format: str = "tar",
                 image_column: str = "image", caption_column: str = "caption",
                 base_dir: str | Path | None = None, prefix: str = "shard") -> list[Path]:
    """Split a pairs table into ``n_shards`` shard files of about equal size (input order kept).

    Args:
        pairs: the pairs table; its image column holds local paths.
        out_dir: the folder written to (``<prefix>-00000.<format>``, ...).
        n_shards: how many shards.
        shard_format: ``tar`` (webdataset: image bytes, ``txt`` caption, the other columns in
            ``json``), ``parquet`` (image bytes in the image column) or ``csv`` (absolute paths).
        image_column, caption_column: the table's columns.
        base_dir: the folder relative image paths are resolved against (default: the table's
            ``attrs["base_dir"]``).
        prefix: the shard files' name prefix.

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: an unknown format, or fewer rows than shards.
    """
    if shard_format not in ("tar", "parquet", "csv"):
        raise ValueError(f"unknown shard format {shard_format!r}; use tar, parquet or csv")
    if not 0 < n_shards <= max(len(pairs), 1):
        raise ValueError(f"cannot split {len(pairs)} rows into {n_shards} shards")
    base = Path(base_dir or pairs.attrs.get("base_dir") or ".")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * len(pairs) / n_shards) for i in range(n_shards + 1)]
    paths = []
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        part = pairs.iloc[start:stop].reset_index(drop=True)
        images = [(base / str(ref)).resolve() for ref in part[image_column]]
        path = out_dir / f"{prefix}-{number:05d}.{shard_format}"
        with atomic_path(path) as tmp:
            if shard_format == "tar":
                _write_tar(tmp, part, images, image_column, caption_column)
            elif shard_format == "parquet":
                part.assign(**{image_column: [image.read_bytes() for image in images]}).to_parquet(tmp, index=False)
            else:
                part.assign(**{image_column: [str(image) for image in images]}).to_csv(tmp, index=False)
        paths.append(path)
    return paths


def _write_tar(path: Path, part: pd.DataFrame, images: list[Path], image_column: str, caption_column: str) -> None:
    with tarfile.open(path, "w") as archive:
        for number, (row, image) in enumerate(zip(part.to_dict("records"), images)):
            key = f"{number:09d}"
            fields = {name: value for name, value in row.items() if name not in (image_column, caption_column)}
            files = {image.suffix.lower().lstrip(".") or "jpg": image.read_bytes(),
                     "txt": str(row[caption_column]).encode(),
                     "json": json.dumps(fields, default=str).encode()}
            for extension, content in files.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))


def write_filtered_shard(path: str | Path, keep_rows: list[int], out_path: str | Path) -> Path:
    """Copy a shard keeping only the samples at ``keep_rows`` (positions as :func:`read_shard` numbers
    them), in the same format: a tar keeps every file of a kept sample, byte for byte.

    Returns:
        ``out_path``, written atomically.
    """
    path, out_path = Path(path), Path(out_path)
    keep = set(keep_rows)
    with atomic_path(out_path) as tmp:
        if path.suffix.lower() in TAR_SUFFIXES:
            with _open_tar(path) as source, tarfile.open(tmp, "w") as target:
                for number, _, _, member in _tar_members(source):
                    if number in keep:
                        target.addfile(member, source.extractfile(member))
        elif path.suffix.lower() == ".parquet":
            pd.read_parquet(path).iloc[sorted(keep)].to_parquet(tmp, index=False)
        else:
            separator = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
            table.iloc[sorted(keep)].to_csv(tmp, sep=separator, index=False)
    return out_path
