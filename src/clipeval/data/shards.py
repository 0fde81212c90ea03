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
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from clipeval.atomic import atomic_path
from clipeval.data.sources import IMAGE_EXTENSIONS as FOLDER_IMAGE_EXTENSIONS
from clipeval.data.sources import read_delimited

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
TAR_SUFFIXES = (".tar",)
SHARD_SUFFIXES = TABLE_SUFFIXES + TAR_SUFFIXES
# a sample's image: any extension a folder source takes as an image
IMAGE_EXTENSIONS = tuple(sorted(extension.lstrip(".") for extension in FOLDER_IMAGE_EXTENSIONS))
CAPTION_EXTENSIONS = ("txt", "caption", "text")
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
               uid_column: str = "uid") -> pd.DataFrame:
    """Read one shard whole: one row per sample, in file order.

    Args:
        path: a ``.parquet``, ``.csv``, ``.tsv`` or webdataset ``.tar`` file.
        image_column: the column holding the image (for a tar: where the image bytes go).
        caption_column: the caption column (for a tar: where the ``txt`` goes).
        uid_column: the column with each sample's unique id, when the shard has one.

    Returns:
        The samples, with a ``uid`` column (strings) and ``attrs["base_dir"]`` (the shard's
        folder, for relative image paths). Image cells hold a path/URL string, bytes, or None.

    Raises:
        ShardReadError: the shard is missing, unreadable, or lacks the image or caption column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TAR_SUFFIXES:
            table = _read_webdataset(path, image_column, caption_column)
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
    table[image_column] = [_image_cell(value) for value in table[image_column]]
    table["uid"] = shard_uids(table, shard_name(path), uid_column)
    table.attrs["base_dir"] = str(path.parent)
    return table


def shard_uids(table: pd.DataFrame, name: str, uid_column: str = "uid") -> pd.Series:
    """Each sample's unique id: its ``uid_column`` when every row has one, else ``<name>/<webdataset key>``,
    else ``<name>/<row>``."""
    if uid_column in table and table[uid_column].notna().all():
        return table[uid_column].astype(str).reset_index(drop=True)
    if "__key__" in table:
        return (name + "/" + table["__key__"].astype(str)).reset_index(drop=True)
    return pd.Series([f"{name}/{row}" for row in range(len(table))], dtype=object)


def _image_cell(value: object) -> str | bytes | None:
    """A path/URL string or image bytes; a Hugging Face image record gives its bytes (or its path)."""
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
    of its last path part; the extension (the rest) is lower-cased. Directories and files with
    no extension are skipped.
    """
    number, key = -1, None
    for member in archive:
        folder, _, base = member.name.rpartition("/")
        stem, dot, extension = base.partition(".")
        if not member.isfile() or not dot:
            continue
        member_key = f"{folder}/{stem}" if folder else stem
        if member_key != key:
            number, key = number + 1, member_key
        yield number, member_key, extension.lower(), member


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A webdataset tar's samples in file order, one at a time: ``(key, {extension: content})``.

    Raises:
        tarfile.TarError, OSError, EOFError: the tar cannot be read.
    """
    with tarfile.open(path, mode="r:*") as archive:
        key, sample = None, {}
        for _, member_key, extension, member in _tar_members(archive):
            if member_key != key and sample:
                yield key, sample
                sample = {}
            key = member_key
            sample[extension] = archive.extractfile(member).read()
        if sample:
            yield key, sample


def _read_webdataset(path: Path, image_column: str, caption_column: str) -> pd.DataFrame:
    rows = []
    for key, files in iter_tar_samples(path):
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
        row[image_column] = image
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
            with tarfile.open(path, mode="r:*") as source, tarfile.open(tmp, "w") as target:
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
