"""Sharded inputs: lists of shard files, each read whole into a table of samples.

A shard is one file of image-caption samples, the unit of work and of resuming in a sharded
run (docs/sharded-runs.md):

* **parquet** or **CSV/TSV**: one row per sample. The image column holds a path (relative to
  the shard's folder), a URL, the image bytes, or a Hugging Face ``{"bytes", "path"}`` record;
* **webdataset tar**: files grouped by key (the name up to the first dot of the basename): an
  image (``jpg``, ``png``, ``webp``...: :data:`IMAGE_EXTENSIONS`), the caption in ``txt`` (or ``caption`` /
  ``text``), and any ``json`` fields, which become columns.

**Grouped samples**: an image stored once with several captions. A tar sample whose ``json`` has a
``captions`` list (:data:`CAPTIONS_FIELD`; its ``txt`` is then ignored), or a parquet row whose
caption cell is a list, is read as one row per caption: a field that is a list as long as the
captions gives each row its item, any other field is the image's and every row gets it, and
``__caption__`` (:data:`CAPTION_NUMBER`) is the caption's position in its sample. No caption gives
one row without one. :func:`write_shards` writes this form, with ``source_row`` and
``source_image`` per caption (:data:`SOURCE_COLUMNS`): the join back to the pairs table.

Every row comes in file order, with a ``uid``: the shard's own ``uid`` column (or a webdataset
``json``'s ``uid``) when it has one (``<uid>.<caption number>`` when the captions of a grouped
sample share it), else ``<shard name>/<key>`` for a tar sample (``<shard name>/<key>.<caption
number>`` for a grouped one), else ``<shard name>/<row number>``. A sample with no image or no
caption keeps its row (scoring gives it a status); a shard that cannot be read at all raises
:class:`ShardReadError`.

Shards are web data and may be hostile, so:

* **a byte cap per member** (:data:`MAX_MEMBER_BYTES`, or ``max_member_bytes``; the command
  line's ``--max-member-mb``): a tar member larger than the cap is refused from its header,
  before any byte of it is read, and no member is ever read past the cap, whatever the tar's
  compression (gzip, bz2 and xz tars are read whatever their name). The sample keeps its row,
  with the status ``member_too_large``; an image cell of a parquet shard over the cap gets the
  same status;
* **whole-shard limits** (:class:`~clipeval.data.options.ShardLimits`, the command line's
  ``--max-shard-mb``, ``--max-shard-rows``, ``--max-captions``, ``--max-json-kb``,
  ``--max-tar-header-kb``, ``--max-xz-memory-mb``): bytes decompressed or held, rows, tar headers
  checked before they are read, any compressed container under a memory limit, a parquet file
  checked from its footer; over one the shard fails (a sample with too many captions, or too
  large a ``json``, keeps its row with a status);
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

import bz2
import contextlib
import copy
import glob
import gzip
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

import numpy as np
import pandas as pd

from clipeval.atomic import atomic_path
from clipeval.data.images import FailedCell
from clipeval.data.options import MAX_MEMBER_BYTES, MAX_TAR_HEADER_BYTES, ShardLimits
from clipeval.data.sources import IMAGE_EXTENSIONS as FOLDER_IMAGE_EXTENSIONS
from clipeval.data.sources import read_delimited

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
TAR_SUFFIXES = (".tar",)
SHARD_SUFFIXES = TABLE_SUFFIXES + TAR_SUFFIXES
# a sample's image: any extension a folder source takes as an image
IMAGE_EXTENSIONS = tuple(sorted(extension.lstrip(".") for extension in FOLDER_IMAGE_EXTENSIONS))
CAPTION_EXTENSIONS = ("txt", "caption", "text")
# a grouped tar sample's captions: this json field, a list (a parquet shard's: list cells in its caption column)
CAPTIONS_FIELD = "captions"
# a grouped sample's row: the caption's position in its sample
CAPTION_NUMBER = "__caption__"
# what write_shards adds to every row: its position in the pairs table and its image as the table gives it
SOURCE_COLUMNS = ("source_row", "source_image")
_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_LONG_DIGITS = re.compile(rb"[0-9]{64}")
CHUNK_BYTES = 64 * 2**10  # a skip inside a compressed tar, read and dropped this much at a time
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
               uid_column: str = "uid", max_member_bytes: int | None = None,
               limits: ShardLimits = ShardLimits()) -> pd.DataFrame:
    """Read one shard whole: one row per sample, in file order.

    Args:
        path: a ``.parquet``, ``.csv``, ``.tsv`` or webdataset ``.tar`` file (plain, gzip, bz2 or xz).
        image_column: the column holding the image (for a tar: where the image bytes go).
        caption_column: the caption column (for a tar: where the ``txt`` goes).
        uid_column: the column with each sample's unique id, when the shard has one.
        max_member_bytes: the byte cap of one tar member or image cell (default
            :data:`MAX_MEMBER_BYTES`); a sample over it gets ``member_too_large``.
        limits: the caps of the whole shard (bytes, rows, captions per sample, tar headers); a
            sample over the captions cap gets ``too_many_captions``, a shard over another cap fails.

    Returns:
        The samples, one row per caption of a grouped sample (module docstring), with a ``uid``
        column (safe, unique strings: :func:`shard_uids`) and ``attrs["base_dir"]`` (the shard's
        folder, for relative image paths). Image cells hold a path/URL string, bytes, None, or a
        :class:`~clipeval.data.images.FailedCell` for a sample refused here (``member_too_large``,
        ``duplicate_uid``).

    Raises:
        ShardReadError: the shard is missing, unreadable, over one of ``limits``, or lacks the image
            or caption column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    cap = MAX_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
    try:
        if suffix in TAR_SUFFIXES:
            table = _read_webdataset(path, image_column, caption_column, cap, limits)
        elif suffix == ".parquet":
            table = _expand_lists(_read_parquet(path, image_column, cap, limits), image_column, caption_column,
                                  limits.captions)
        elif suffix in (".csv", ".tsv"):
            _check_size(path, path.stat().st_size, limits)
            table = read_delimited(path, "\t" if suffix == ".tsv" else ",", image_column, caption_column,
                                   max_rows=limits.rows + 1)
        else:
            raise ShardReadError(f"{path}: not a shard format ({', '.join(SHARD_SUFFIXES)})")
    except ShardReadError:
        raise
    except Exception as error:  # a corrupt container may raise anything; the run goes on
        raise ShardReadError(f"{path}: {type(error).__name__}: {error}") from error
    missing = [column for column in (image_column, caption_column) if column not in table]
    if missing:
        raise ShardReadError(f"{path}: no column(s) {missing}; it has {list(table.columns)}")
    _check_rows(path, len(table), limits)
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
    ``<name>/<webdataset key>``, else ``<name>/<row>``. A row of a grouped sample (a :data:`CAPTION_NUMBER`)
    adds ``.<caption number>`` to a key, and to a ``uid_column`` value that other rows of the shard share.

    A uid an earlier row already has becomes ``<uid>#<row>`` (``#`` is never in a safe uid, so the
    result is unique); :func:`read_shard` gives such rows the status ``duplicate_uid``.
    """
    return pd.Series(_unique_uids(_wanted_uids(table, name, uid_column))[0], dtype=object)


def _wanted_uids(table: pd.DataFrame, name: str, uid_column: str) -> list[str]:
    """Each row's safe uid before duplicates are made unique.

    A grouped sample's caption number follows a dot: a key never holds one (it ends at the first
    dot), so ``<name>/<key>.<caption number>`` is never another sample's uid.
    """
    numbers = (table[CAPTION_NUMBER].tolist() if CAPTION_NUMBER in table else [None] * len(table))
    suffixes = ["" if number is None or pd.isna(number) else f".{int(number)}" for number in numbers]
    if uid_column in table and table[uid_column].notna().all():
        values = table[uid_column].astype(str)
        shared = values.duplicated(keep=False).tolist()  # one uid for an image's captions: number them
        return [safe_uid(value) + (suffix if repeated else "")
                for value, suffix, repeated in zip(values, suffixes, shared)]
    name = safe_uid(name)
    if "__key__" in table:
        return [f"{name}/{safe_uid(key)}{suffix}" for key, suffix in zip(table["__key__"].astype(str), suffixes)]
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


def _tar_samples(path: str | Path, cap: int, limits: ShardLimits = ShardLimits()
                 ) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A tar's samples: ``(key, {extension: content}, [reason per member over the cap])``.

    A member's size is read from its header: one over ``cap`` (a ``json`` over ``limits.json_bytes``)
    is skipped without reading a byte of it, and no read asks for more than ``cap + 1`` bytes, so a
    compressed tar cannot inflate one member in memory.
    """
    with _open_tar(path, limits) as archive:
        number, key, files, over = None, None, {}, []
        for member_number, member_key, extension, member in _tar_members(archive):
            if member_number != number and number is not None:
                yield key, files, over
                files, over = {}, []
            number, key = member_number, member_key
            if extension == "json" and member.size > limits.json_bytes:  # parsed, it could take 20 times its size
                over.append(f"member {member.name!r} is {member.size:,} bytes, over the {limits.json_bytes:,}-byte "
                            "json cap (--max-json-kb); not read")
                continue
            # read(n) allocates n bytes up front: ask for the member's own size (tarfile never gives more)
            data = archive.extractfile(member).read(member.size + 1) if member.size <= cap else b""
            if member.size > cap or len(data) > cap:
                over.append(f"member {member.name!r} is {max(member.size, len(data)):,} bytes, over the "
                            f"{cap:,}-byte member cap; not read")
            else:
                files[extension] = data
        if number is not None:
            yield key, files, over


@contextlib.contextmanager
def _open_tar(path: str | Path, limits: ShardLimits = ShardLimits()) -> Iterator[tarfile.TarFile]:
    """A tar opened for reading, plain or compressed whatever its name, within ``limits``.

    The container is told from its first bytes, never by tarfile's own ``r:*`` (which opens a
    legacy ``.lzma`` stream without a memory limit): gzip and bz2 (small fixed windows), a plain
    tar (its first block a valid header), anything else as xz or legacy LZMA under
    ``limits.xz_memory``. Every byte decompressed (or read from a plain tar) counts against
    ``limits.shard_bytes``, and pax headers and GNU long names are checked before they are read
    (:class:`_CheckedTarInfo`).
    """
    with open(path, "rb") as handle:
        first_block = handle.read(tarfile.BLOCKSIZE)
        handle.seek(0)
        inner, compressed = _decompressed(handle, first_block, limits.xz_memory)
        stream = _BoundedStream(inner, compressed, limits.shard_bytes)
        checked = type("_CheckedTarInfo", (_CheckedTarInfo,), {"header_bytes": limits.header_bytes})
        try:
            with tarfile.open(fileobj=stream, mode="r:", tarinfo=checked) as archive:
                yield archive
        except _OverLimit as error:
            raise ShardReadError(f"{path}: {error}") from None
        except lzma.LZMAError as error:
            if "memory" not in str(error).lower():
                raise ShardReadError(f"{path}: not a tar, nor a gzip, bz2, xz or lzma one ({error})") from error
            raise ShardReadError(f"{path}: the xz/lzma stream needs more than {limits.xz_memory:,} bytes of memory to "
                                 "decompress (--max-xz-memory-mb); not read") from error


def _decompressed(handle, first_block: bytes, xz_memory: int):
    """``(stream, compressed)``: ``handle``'s tar bytes, through the decompressor its first bytes name."""
    if first_block.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=handle, mode="rb"), True
    if first_block.startswith(_BZ2_MAGIC):
        return bz2.BZ2File(handle), True
    if _is_tar_header(first_block):
        return handle, False
    # xz, legacy LZMA_alone (which has no magic bytes) or neither: liblzma's auto decoder decides, under the limit
    # (skipping a member fills the dictionary however large the stream declares it; gzip and bz2 windows are small)
    return io.BufferedReader(DecompressReader(handle, lzma.LZMADecompressor, trailing_error=lzma.LZMAError,
                                              memlimit=xz_memory)), True


def _is_tar_header(block: bytes) -> bool:
    """Whether ``block`` is a tar header with a valid checksum, or the end-of-archive zeros."""
    if len(block) != tarfile.BLOCKSIZE:
        return False
    if block == bytes(tarfile.BLOCKSIZE):
        return True
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


class _OverLimit(Exception):
    """A tar read past one of its limits (the message says which, and the flag that raises it)."""


class _BoundedStream:
    """A tar's bytes as tarfile reads them: each byte read, or skipped in a compressed stream, counted against a cap.

    Skipping inside a compressed stream decompresses, so it is done here, counted, rather than by
    the decompressor's own ``seek``; a plain tar skips by seeking, free. A header read for checking
    can be pushed back (:meth:`unread`) for tarfile to read again.
    """

    def __init__(self, inner, compressed: bool, limit: int):
        self._inner, self._compressed, self._limit = inner, compressed, limit
        self._count, self._pushed = 0, b""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit - self._count + 1  # never an unbounded read
        head, self._pushed = self._pushed[:size], self._pushed[size:]
        data = self._inner.read(size - len(head)) if size > len(head) else b""
        self._counted(len(data))
        return head + data

    def unread(self, data: bytes) -> None:
        self._pushed = data + self._pushed

    def tell(self) -> int:
        return self._inner.tell() - len(self._pushed)

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.tell() + offset
        self._pushed = b""
        if not self._compressed or target < self._inner.tell():
            self._inner.seek(target)
        while (gap := target - self._inner.tell()) > 0:
            chunk = self._inner.read(min(gap, CHUNK_BYTES))
            if not chunk:
                break
            self._counted(len(chunk))
        return self.tell()

    def _counted(self, size: int) -> None:
        self._count += size
        if self._count > self._limit:
            raise _OverLimit(f"more than {self._limit:,} bytes read or decompressed, over the shard cap "
                             "(--max-shard-mb); the shard is not read further")


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile's header reader with pax headers and GNU long names checked before they are parsed.

    A header larger than ``header_bytes`` is refused from its size, before it is read. A pax
    header must be well-formed records (``<length> <key>=<value>\\n``) with no run of 64 digits
    and no GNU sparse map, checked in one linear pass, so CPython's quadratic pax parsing
    (CVE-2024-6232, Python before 3.11.10/3.12.6) never meets a hostile header.
    """

    header_bytes = MAX_TAR_HEADER_BYTES

    def _proc_gnulong(self, tarfile_):
        self._check_size("GNU long name")
        return super()._proc_gnulong(tarfile_)

    def _proc_pax(self, tarfile_):
        self._check_size("pax header")
        data = tarfile_.fileobj.read(self._block(self.size))
        _check_pax_records(data[:self.size], self.offset)
        tarfile_.fileobj.unread(data)
        return super()._proc_pax(tarfile_)

    def _check_size(self, kind: str) -> None:
        if self.size > self.header_bytes:
            raise _OverLimit(f"a {kind} of {self.size:,} bytes at offset {self.offset:,}, over the "
                             f"{self.header_bytes:,}-byte tar header cap (--max-tar-header-kb); not read")


def _check_pax_records(data: bytes, offset: int) -> None:
    """Raise :class:`_OverLimit` unless ``data`` is well-formed pax records, safe for tarfile's parser."""
    def refuse(why: str):
        raise _OverLimit(f"the pax header at offset {offset:,} {why}; the shard is not read")

    if _LONG_DIGITS.search(data):
        refuse("holds a run of 64 or more digits")
    position = 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position, position + 21)
        if space <= position or not data[position:space].isdigit():
            refuse("has a record without a length")
        end = position + int(data[position:space])
        record = data[space + 1:end]
        if end > len(data) or end <= space + 1 or not record.endswith(b"\n") or b"=" not in record:
            refuse("has a malformed record")
        if record.startswith(b"GNU.sparse"):
            refuse("describes a GNU sparse file")
        position = end


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


def _read_webdataset(path: Path, image_column: str, caption_column: str, cap: int,
                     limits: ShardLimits) -> pd.DataFrame:
    rows = []
    for key, files, over in _tar_samples(path, cap, limits):
        rows += _webdataset_rows(key, files, over, image_column, caption_column, limits.captions)
        _check_rows(path, len(rows), limits)
    table = pd.DataFrame(rows)
    for column in ("__key__", image_column, caption_column):
        if column not in table:
            table[column] = pd.Series(dtype=object)
    if CAPTION_NUMBER in table:
        table[CAPTION_NUMBER] = table[CAPTION_NUMBER].astype("Int64")
    return table


def _webdataset_rows(key: str, files: dict[str, bytes], over: list[str], image_column: str,
                     caption_column: str, max_captions: int) -> list[dict]:
    """A tar sample's rows: one, or one per caption of a grouped sample (its ``json`` has a ``captions`` list).

    The ``json``'s scalar fields become columns (a grouped sample's per-caption lists give each row its
    item); the image, read once, is every row's. A sample listing more than ``max_captions`` is one
    row, ``too_many_captions``.
    """
    fields = _json_fields(files)
    image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
    cell = FailedCell(image, "member_too_large", "; ".join(over)) if over else image
    captions = fields.get(CAPTIONS_FIELD)
    if isinstance(captions, list) and len(captions) > max_captions:
        cell = FailedCell(image, "too_many_captions", _too_many_captions(len(captions), max_captions))
        rows = [{**_scalars(fields), caption_column: None}]
    elif isinstance(captions, list):
        captions = fields.pop(CAPTIONS_FIELD)
        rows = [_scalars(row) for row in _per_caption(fields, captions, caption_column)]
    else:
        row = _scalars(fields)
        caption = next((files[ext] for ext in CAPTION_EXTENSIONS if ext in files), None)
        if caption is not None:
            row[caption_column] = caption.decode("utf-8", errors="replace").strip()
        else:
            row.setdefault(caption_column, None)
        rows = [row]
    return [{"__key__": key, **row, image_column: cell} for row in rows]


def _too_many_captions(count: int, cap: int) -> str:
    return f"the sample lists {count:,} captions, over the cap of {cap:,} (--max-captions); not scored"


def _check_size(path: Path, size: int, limits: ShardLimits) -> None:
    """Raise when a shard would hold more than ``limits.shard_bytes`` in memory."""
    if size > limits.shard_bytes:
        raise ShardReadError(f"{path}: {size:,} bytes to hold, over the shard cap of {limits.shard_bytes:,} "
                             "(--max-shard-mb); not read")


def _read_parquet(path: Path, image_column: str, cap: int, limits: ShardLimits) -> pd.DataFrame:
    """A parquet shard, checked from its metadata before any cell is read.

    Its rows and uncompressed size come from the footer: over ``limits`` the shard fails unread. A
    row group of one row whose image column is over ``cap`` (as writers store one large cell) gets
    ``member_too_large`` without that column being read; a larger cell in a group of many rows is
    caught after reading, the group's size already bounded by the shard cap.
    """
    import pyarrow.parquet as pq  # pandas' parquet engine

    with pq.ParquetFile(path) as parquet:
        metadata = parquet.metadata
        _check_rows(path, metadata.num_rows, limits)
        _check_size(path, sum(metadata.row_group(group).total_byte_size for group in range(metadata.num_row_groups)),
                    limits)
        columns = parquet.schema_arrow.names
        tables = []
        for group in range(metadata.num_row_groups):
            image_bytes = _column_bytes(metadata.row_group(group), image_column)
            if image_column in columns and metadata.row_group(group).num_rows == 1 and image_bytes > cap:
                rest = parquet.read_row_group(group, columns=[name for name in columns if name != image_column])
                frame = rest.to_pandas()
                frame.insert(columns.index(image_column), image_column, [FailedCell(
                    None, "member_too_large", f"the image cell holds {image_bytes:,} bytes (from the file's "
                                              f"metadata), over the {cap:,}-byte member cap; not read")])
            else:
                frame = parquet.read_row_group(group).to_pandas()
            tables.append(frame)
    return pd.concat(tables, ignore_index=True) if tables else parquet.schema_arrow.empty_table().to_pandas()


def _column_bytes(row_group, column: str) -> int:
    """A row group's uncompressed bytes of ``column`` (all its leaves: a record's ``bytes`` and ``path``)."""
    return sum(row_group.column(index).total_uncompressed_size for index in range(row_group.num_columns)
               if row_group.column(index).path_in_schema.split(".")[0] == column)


def _check_rows(path: Path, rows: int, limits: ShardLimits) -> None:
    """Raise when a shard gives more rows than ``limits.rows``."""
    if rows > limits.rows:
        raise ShardReadError(f"{path}: more than {limits.rows:,} rows, over the row cap (--max-shard-rows); "
                             "split the shard")


def _json_fields(files: dict[str, bytes]) -> dict:
    """A tar sample's ``json`` object (a copy); ``json_error`` when it does not parse; empty without one."""
    if "json" not in files:
        return {}
    try:
        fields = json.loads(files["json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return {"json_error": f"{type(error).__name__}: {error}"}
    return dict(fields) if isinstance(fields, dict) else {}


def _scalars(fields: dict) -> dict:
    """The fields a column can hold: strings, numbers, booleans and None."""
    return {name: value for name, value in fields.items()
            if value is None or isinstance(value, (str, int, float, bool))}


def _is_list(value: object) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _per_caption(fields: dict, captions, caption_column: str) -> list[dict]:
    """A grouped sample's rows, one per caption (numbered in :data:`CAPTION_NUMBER`).

    A field that is a list as long as ``captions`` gives each row its item; any other field is
    the sample's, and every row gets it. No caption gives one row, with no caption.
    """
    count = len(captions)
    own = {name for name, value in fields.items() if _is_list(value) and len(value) == count}
    if not count:
        return [{**{name: value for name, value in fields.items() if name not in own}, caption_column: None}]
    return [{**{name: value[number] if name in own else value for name, value in fields.items()},
             caption_column: None if captions[number] is None else str(captions[number]), CAPTION_NUMBER: number}
            for number in range(count)]


def _expand_lists(table: pd.DataFrame, image_column: str, caption_column: str, max_captions: int) -> pd.DataFrame:
    """A parquet shard whose caption cells are lists, one row per caption (:func:`_per_caption`); else as it is.

    A row listing more than ``max_captions`` stays one row, its image cell ``too_many_captions``.
    """
    if caption_column not in table or not any(_is_list(value) for value in table[caption_column]):
        return table
    rows = []
    for record in table.to_dict("records"):
        captions = record.pop(caption_column)
        if _is_list(captions) and len(captions) > max_captions:
            cell = FailedCell(_image_cell(record.get(image_column)), "too_many_captions",
                              _too_many_captions(len(captions), max_captions))
            rows.append({**record, image_column: cell, caption_column: None})
            continue
        rows += (_per_caption(record, captions, caption_column) if _is_list(captions)
                 else [{**record, caption_column: captions}])
    expanded = pd.DataFrame(rows, columns=[*table.columns, CAPTION_NUMBER])
    expanded[CAPTION_NUMBER] = expanded[CAPTION_NUMBER].astype("Int64")
    return expanded


def _subset(fields: dict, kept: list[int], captions_field: str) -> dict:
    """A grouped sample keeping only the captions at ``kept``: its per-caption lists cut to them, the rest as is."""
    count = len(fields[captions_field])
    return {name: [value[number] for number in kept] if _is_list(value) and len(value) == count else value
            for name, value in fields.items()}


def _captions_txt(captions: list) -> bytes:
    """A grouped sample's ``txt``: one caption a line, a line break inside one written ``\\n`` (as CLIP_benchmark
    writes a webdataset's captions)."""
    return "\n".join("" if caption is None else str(caption).replace("\n", "\\n") for caption in captions).encode()


def write_shards(pairs: pd.DataFrame, out_dir: str | Path, n_shards: int, shard_format: str = "tar",
                 image_column: str = "image", caption_column: str = "caption",
                 base_dir: str | Path | None = None, prefix: str = "shard") -> list[Path]:
    """Split a pairs table into ``n_shards`` shard files, each image stored once with all its captions.

    The rows are grouped by image file (in order of first appearance; an image's captions in input
    order) and the images split into shards of about equal numbers, so an image's captions are
    never split between shards, and a table whose captions of an image are consecutive keeps its
    order. Every row gets ``source_row`` (its position in ``pairs``, the ``row_id`` of
    ``results.csv``) and ``source_image`` (its image as ``pairs`` gives it): the join back.

    Args:
        pairs: the pairs table; its image column holds local paths.
        out_dir: the folder written to (``<prefix>-00000.<format>``, ...).
        n_shards: how many shards.
        shard_format: ``tar`` (webdataset, one sample per image: the image, its captions one a line
            in ``txt``, and a ``json`` with the ``captions`` list and every other column as a list, one
            item per caption), ``parquet`` (one row per image: its bytes in the image column, the
            caption and every other column as lists) or ``csv`` (one row per caption, absolute paths).
        image_column, caption_column: the table's columns.
        base_dir: the folder relative image paths are resolved against (default: the table's
            ``attrs["base_dir"]``).
        prefix: the shard files' name prefix.

    Returns:
        The shard paths, in order.

    Raises:
        ValueError: an unknown format, fewer images than shards, or a column the shards add
            (``source_row``, ``source_image``, ``__key__``, ``__caption__``; ``captions`` in a tar).
    """
    if shard_format not in ("tar", "parquet", "csv"):
        raise ValueError(f"unknown shard format {shard_format!r}; use tar, parquet or csv")
    reserved = [*SOURCE_COLUMNS, "__key__", CAPTION_NUMBER, *([CAPTIONS_FIELD] if shard_format == "tar" else [])]
    clashes = [column for column in reserved if column in pairs]
    if clashes:
        raise ValueError(f"the pairs table has column(s) {clashes}, which {shard_format} shards write themselves; "
                         "rename them first")
    base = Path(base_dir or pairs.attrs.get("base_dir") or ".")
    table = pairs.reset_index(drop=True)
    table = table.assign(**{SOURCE_COLUMNS[0]: np.arange(len(table)),
                            SOURCE_COLUMNS[1]: [str(ref) for ref in table[image_column]]})
    images = [(base / ref).resolve() for ref in table[SOURCE_COLUMNS[1]]]
    cells = {name: [_plain(value) for value in table[name].tolist()] for name in table.columns if name != image_column}
    groups: dict[Path, list[int]] = {}
    for row, image in enumerate(images):
        groups.setdefault(image, []).append(row)
    samples = list(groups.values())
    if not 0 < n_shards <= max(len(samples), 1):
        raise ValueError(f"cannot split {len(samples)} image(s) ({len(table)} rows) into {n_shards} shards")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * len(samples) / n_shards) for i in range(n_shards + 1)]
    paths = []
    for number, (start, stop) in enumerate(itertools.pairwise(bounds)):
        path = out_dir / f"{prefix}-{number:05d}.{shard_format}"
        with atomic_path(path) as tmp:
            if shard_format == "tar":
                _write_tar(tmp, cells, images, samples[start:stop], caption_column)
            elif shard_format == "parquet":
                pd.DataFrame([{image_column: images[sample[0]].read_bytes(), **_lists(cells, sample)}
                              for sample in samples[start:stop]], columns=table.columns).to_parquet(tmp, index=False)
            else:
                rows = [row for sample in samples[start:stop] for row in sample]
                table.iloc[rows].assign(**{image_column: [str(images[row]) for row in rows]}).to_csv(tmp, index=False)
        paths.append(path)
    return paths


def _plain(value: object) -> object:
    """A cell as a shard holds it: a missing value (NaN, NA, NaT) as None."""
    missing = value is None or (not _is_list(value) and not isinstance(value, dict) and pd.isna(value))
    return None if missing else value


def _lists(cells: dict[str, list], rows: list[int]) -> dict[str, list]:
    """Each column's values at ``rows``: a grouped sample's per-caption lists."""
    return {name: [values[row] for row in rows] for name, values in cells.items()}


def _write_tar(path: Path, cells: dict[str, list], images: list[Path], samples: list[list[int]],
               caption_column: str) -> None:
    """One webdataset sample per image: the image, ``txt`` (the captions, one a line) and ``json`` (the
    ``captions`` list and every other column as a list, one item per caption)."""
    with tarfile.open(path, "w") as archive:
        for number, rows in enumerate(samples):
            fields = _lists(cells, rows)
            texts = [None if caption is None else str(caption) for caption in fields.pop(caption_column)]
            image = images[rows[0]]
            files = {image.suffix.lower().lstrip(".") or "jpg": image.read_bytes(), "txt": _captions_txt(texts),
                     "json": json.dumps({CAPTIONS_FIELD: texts, **fields}, default=str).encode()}
            for extension, content in files.items():
                info = tarfile.TarInfo(f"{number:09d}.{extension}")
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))


def write_filtered_shard(path: str | Path, keep_rows: list[int], out_path: str | Path,
                         caption_column: str = "caption") -> Path:
    """Copy a shard keeping only the rows at ``keep_rows`` (positions as :func:`read_shard` numbers
    them), in the same format: a tar keeps every file of a kept sample, byte for byte. A grouped
    sample (module docstring) is kept when any of its captions is, with only those: its ``json``
    and caption file (a parquet row's lists) are rewritten, its image copied as it is.

    Args:
        path: the shard.
        keep_rows: the rows to keep.
        out_path: the filtered shard.
        caption_column: a parquet shard's caption column (the one it was read with).

    Returns:
        ``out_path``, written atomically.
    """
    path, out_path = Path(path), Path(out_path)
    keep = set(keep_rows)
    with atomic_path(out_path) as tmp:
        if path.suffix.lower() in TAR_SUFFIXES:
            _filter_tar(path, keep, tmp)
        elif path.suffix.lower() == ".parquet":
            _filter_parquet(pd.read_parquet(path), keep, caption_column).to_parquet(tmp, index=False)
        else:
            separator = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
            table.iloc[sorted(keep)].to_csv(tmp, sep=separator, index=False)
    return out_path


def _kept_captions(count: int, first_row: int, keep: set[int]) -> list[int]:
    """The positions of a sample's kept captions, its rows being ``first_row`` onwards (``count`` 0: one row)."""
    return [number for number in range(max(count, 1)) if first_row + number in keep]


def _filter_tar(path: Path, keep: set[int], out: Path) -> None:
    """Write ``path``'s samples with a row in ``keep`` to ``out``: whole ones byte for byte, grouped ones cut."""
    plans: list[dict | bool] = []  # per sample: False (dropped), True (whole) or its json cut to the kept captions
    row = 0
    for _, files, _ in _tar_samples(path, MAX_MEMBER_BYTES):
        fields = _json_fields(files)
        grouped = isinstance(fields.get(CAPTIONS_FIELD), list)
        count = len(fields[CAPTIONS_FIELD]) if grouped else 1
        kept = _kept_captions(count, row, keep)
        row += max(count, 1)
        plans.append(bool(kept) if len(kept) == max(count, 1) or not kept else _subset(fields, kept, CAPTIONS_FIELD))
    with _open_tar(path) as source, tarfile.open(out, "w") as target:
        for number, _, extension, member in _tar_members(source):
            plan = plans[number]
            if plan is True or (plan and extension not in ("json", *CAPTION_EXTENSIONS)):
                target.addfile(member, source.extractfile(member))
            elif plan:
                content = (json.dumps(plan).encode() if extension == "json" else _captions_txt(plan[CAPTIONS_FIELD]))
                info = copy.copy(member)
                info.size = len(content)
                target.addfile(info, io.BytesIO(content))


def _filter_parquet(table: pd.DataFrame, keep: set[int], caption_column: str) -> pd.DataFrame:
    """A parquet shard's rows with a read row in ``keep``; a row of caption lists cut to the kept captions."""
    if caption_column not in table or not any(_is_list(value) for value in table[caption_column]):
        return table.iloc[sorted(keep)]
    rows, row = [], 0
    for record in table.to_dict("records"):
        grouped = _is_list(record[caption_column])
        count = len(record[caption_column]) if grouped else 1
        kept = _kept_captions(count, row, keep)
        row += max(count, 1)
        if kept:
            rows.append(record if len(kept) == max(count, 1) else _subset(record, kept, caption_column))
    return pd.DataFrame(rows, columns=table.columns)
