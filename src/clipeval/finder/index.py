"""Build an image-finder index folder: a collection's items, thumbnails and per-checkpoint vectors.

:func:`build_index` reads any pairs source (:func:`clipeval.data.sources.read_pairs`: an image
folder, a table, a COCO file, a Hugging Face dataset), groups its rows by image (one item per
distinct image, with every caption of its rows: a COCO file's five captions of a photo are one
item; a table with a ``match`` column gives an image only its matched rows' captions, never a hard
negative's), gives every item a safe unique id, reads every image once for its status, size and
thumbnail, then embeds the collection with each checkpoint through the one embedding path
(:class:`clipeval.embed.engine.Embedder`, with its cache) into the folder
:class:`clipeval.layout.IndexLayout` describes (docs/finder.md):

* **nothing silently missing**: every input row belongs to one row of ``items.parquet`` (its
  ``rows``), with its status; every (item, checkpoint) without a vector is a row of ``failed.csv``
  with its status and reason;
* **float16 vectors**: L2-normalised, ``(n_ok, dim)``, rows in items order (the measurement that
  float16 changes no ranking is in docs/finder.md);
* **resumable**: a checkpoint whose vectors exist for the same model key and the same items
  (ids, references, captions, image bytes' SHA-256, statuses) is skipped, and the run says so;
  thumbnails already made for the same bytes are kept;
* **one source per folder**: a folder holding an index of another source, or of an older layout
  (version 1: one item per row), is refused by the one claim rule (:func:`clipeval.layout.claim`),
  and so is a folder holding any other files; ``overwrite`` discards an earlier index (its own
  files only);
* **approximate search**: after a checkpoint's vectors, :func:`clipeval.finder.ann.choose_ann`
  decides from the collection size and the memory budget whether a faiss index is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from PIL import Image

from clipeval.atomic import atomic_path, write_csv, write_json
from clipeval.data.images import decode_image, header_size, read_many_bytes
from clipeval.data.options import PairsTableError, SourceOptions
from clipeval.data.shards import safe_uid
from clipeval.data.sources import detect_source_kind, read_pairs
from clipeval.embed.engine import Embedder, LazyEncoder, batches
from clipeval.embed.options import EmbedOptions
from clipeval.finder.options import IndexOptions
from clipeval.finder.search import weights_files
from clipeval.layout import IndexLayout, RunFolderMismatch, claim
from clipeval.progress import progress_bar

# items.parquet's own columns; a source column of the same name is kept as ``source_<name>``
ITEM_COLUMNS = ("id", "row", "rows", "image", "caption", "captions", "status", "error", "width", "height", "sha256")
FAILED_COLUMNS = ("id", "row", "image", "checkpoint", "status", "error")
VECTOR_DTYPE = np.float16
MAX_ID_CHARS = 120
THUMBNAIL_QUALITY = 85


@dataclass
class IndexBuild:
    """What :func:`build_index` did.

    Attributes:
        layout: the index folder.
        rows: input rows.
        images: items: the distinct images those rows name.
        ok: images read and decoded.
        vectors: per checkpoint spec, its vectors (images embedded).
        failed: per checkpoint spec, images without a vector (``failed.csv``).
        built: checkpoints embedded by this call.
        skipped: checkpoints already up to date (same model key, same items), not embedded again.
        ann: per checkpoint spec, the approximate index's parameters (``None``: exact search only).
    """

    layout: IndexLayout
    rows: int
    images: int
    ok: int
    vectors: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ann: dict[str, dict | None] = field(default_factory=dict)


def build_index(source: str | Path, checkpoints: list[str], out_dir: str | Path,
                reading: SourceOptions = SourceOptions(), embed: EmbedOptions = EmbedOptions(),
                options: IndexOptions = IndexOptions(), overwrite: bool = False) -> IndexBuild:
    """Index a collection with one or more checkpoints into ``out_dir`` (see the module docstring).

    Args:
        source: any pairs source :func:`clipeval.data.sources.read_pairs` reads (an image folder too).
        checkpoints: checkpoint specs; the first is the default one of ``search`` and the web page.
        out_dir: the index folder (created; an index of the same source is resumed).
        reading: how the source is read (columns, kind, delimiter, COCO images folder, split).
        embed: the embedding pipeline (device, precision, batching, cache, image reading, progress).
        options: ids, the approximate index, thumbnails.
        overwrite: discard an earlier index of another source in ``out_dir``, and rebuild every checkpoint.

    Returns:
        The :class:`IndexBuild`.

    Raises:
        RunFolderMismatch: ``out_dir`` holds an index of another source (without ``overwrite``), or files that
            are not an index.
        PairsTableError: the source cannot be read.
        ValueError: no checkpoint, a repeated one, or an unknown id column.
    """
    if not checkpoints:
        raise ValueError("give at least one checkpoint (--checkpoint SPEC)")
    if len(set(checkpoints)) != len(checkpoints):
        raise ValueError(f"a checkpoint is given twice: {checkpoints}")
    layout = IndexLayout(Path(out_dir))
    described = describe_source(source, reading, options)
    earlier = _claim(layout, described, overwrite)
    table = read_collection(source, reading, embed)
    base_dir = Path(table.attrs.get("base_dir", "."))
    describes = matched_rows(table)  # a hard negative's caption is no caption of its image
    items, refs = _items(table, reading, options, describes)
    n_rows = len(table)
    previous = _read_previous_items(layout) if earlier is not None else None
    _read_images(items, refs, base_dir, layout, embed, options, previous)

    manifest = earlier or {}
    entries: dict = dict(manifest.get("checkpoints", {}))
    digest = items_digest(items)
    failed_before = _read_failed(layout)
    stale = [spec for spec, entry in entries.items() if overwrite or entry.get("items_sha256") != digest]
    for spec in stale:  # vectors of other items must go before the new items are written
        _remove_checkpoint_files(layout, spec)
        entries.pop(spec)
        if spec not in checkpoints:
            print(f"{spec}: dropped from the index (built for other items)", file=sys.stderr)
    manifest = {"kind": IndexLayout.KIND, "version": IndexLayout.VERSION, "source": described,
                "created_utc": manifest.get("created_utc") or _now(), "updated_utc": _now(), "rows": n_rows,
                "mismatched_rows": describes.count(False), "images": len(items), "complete": False,
                "checkpoints": entries}
    write_json(layout.manifest, manifest)
    items.attrs.clear()  # the source's attrs (its base folder) are no part of the items
    with atomic_path(layout.items) as temp:
        items.to_parquet(temp, index=False)

    build = IndexBuild(layout, n_rows, len(items), int((items["status"] == "ok").sum()))
    failed = {spec: rows for spec, rows in failed_before.items() if spec in entries}
    order = list(checkpoints) + [spec for spec in entries if spec not in checkpoints]
    for spec in checkpoints:
        entry = entries.get(spec)
        with Embedder(LazyEncoder(spec, embed), embed) as embedder:
            key, description = embedder.identify()
            if (entry is not None and entry.get("model_key") == key and layout.vectors(spec).exists()
                    and layout.vector_ids(spec).exists()):
                print(f"{spec}: up to date in {layout.root} (same model and items), skipped", file=sys.stderr)
                build.skipped.append(spec)
            else:
                if entry is not None:  # another model under this spec: unlisted before its files go
                    entries.pop(spec)
                    manifest["checkpoints"] = {name: entries[name] for name in order if name in entries}
                    write_json(layout.manifest, manifest)
                _remove_checkpoint_files(layout, spec)
                vectors, positions, failures = _embed(items, refs, base_dir, embedder, spec, embed, options)
                if not len(vectors):  # no image could be embedded: an empty (0, dim) array all the same
                    vectors = np.zeros((0, _text_dim(embedder)), dtype=VECTOR_DTYPE)
                _save_vectors(layout, spec, vectors, positions)
                entry = {"spec": spec, "model_key": key, "weights": description.get("weights_sha256"),
                         "weights_files": weights_files(spec),
                         "preprocess": description.get("preprocess"), "decode": description.get("decode"),
                         "precision": description.get("precision"), "device": description.get("device"),
                         "context_length": description.get("context_length"), "fast_decode": embed.fast_decode,
                         "decoder": embed.decoder, "dim": int(vectors.shape[1]),
                         "vectors": len(vectors), "dtype": np.dtype(VECTOR_DTYPE).name, "items_sha256": digest,
                         "ann": None, "built_utc": _now()}
                entry["ann"] = _build_ann(layout, spec, vectors, items, embedder, options, embed.progress)
                failed[spec] = failures
                build.built.append(spec)
        entries[spec] = entry
        manifest["checkpoints"] = {name: entries[name] for name in order if name in entries}
        _write_failed(layout, failed, manifest["checkpoints"])
        write_json(layout.manifest, manifest)
    manifest.update(complete=True, updated_utc=_now())
    write_json(layout.manifest, manifest)
    for spec, entry in manifest["checkpoints"].items():
        build.vectors[spec] = entry["vectors"]
        build.failed[spec] = len(failed.get(spec, []))
        build.ann[spec] = entry.get("ann")
    return build


def read_collection(source: str | Path, reading: SourceOptions, embed: EmbedOptions) -> pd.DataFrame:
    """The source's rows (:func:`clipeval.data.sources.read_pairs`); captions are optional in a collection: a
    table without the caption column is read as images alone (empty captions)."""
    try:
        return read_pairs(source, **asdict(reading), cache_dir=embed.fetch.image_cache_dir)
    except PairsTableError as error:
        try:  # the caption column named as the image column: only the image column must exist
            table = read_pairs(source, **asdict(replace(reading, caption_column=reading.image_column)),
                               cache_dir=embed.fetch.image_cache_dir)
        except PairsTableError:
            raise error from None
        if reading.caption_column in table.columns:
            raise
        return table


def describe_source(source: str | Path, reading: SourceOptions, options: IndexOptions) -> dict:
    """What identifies an index's source: its path (resolved), kind, the reading options and the id column."""
    text = str(source)
    path = text if text.startswith("hf:") else str(Path(text).expanduser().resolve())
    kind = detect_source_kind(source) if reading.kind == "auto" else reading.kind
    return {"path": path, **reading.what_is_read(), "kind": kind, "id_column": options.id_column}


def items_digest(items: pd.DataFrame) -> str:
    """The SHA-256 of what a checkpoint's vectors depend on: ids, references, captions, image digests, statuses."""
    columns = items[["id", "image", "sha256", "status"]].astype(str).to_numpy().tolist()
    captions = [list(texts) for texts in items["captions"]]
    return hashlib.sha256(json.dumps([columns, captions]).encode()).hexdigest()


def item_ids(values: list) -> list[str]:
    """Safe, flat, unique ids from one value per item (an id column's cells, or the image references).

    A value becomes :func:`clipeval.data.shards.safe_uid` of its text (a URL without its scheme), its
    ``/`` written ``~`` and a leading ``.`` as ``%2E``, so an id is one file name (``thumbnails/<id>.jpg``);
    one longer than :data:`MAX_ID_CHARS` keeps its start and the text's hash. An empty cell gives
    ``row-<n>`` (``n`` its place in ``values``); an id an earlier item already has gets ``-<n>``.
    """
    ids, seen = [], set()
    for row, value in enumerate(values):
        base = _flat_id(value) or f"row-{row}"
        candidate, extra = base, 0
        while candidate in seen:
            extra += 1
            candidate = f"{base}-{row}" + (f"-{extra}" if extra > 1 else "")
        seen.add(candidate)
        ids.append(candidate)
    return ids


def _flat_id(value) -> str:
    if value is None or isinstance(value, (bytes, bytearray)) or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        text = text.split("://", 1)[1]
    flat = safe_uid(text).replace("/", "~")
    if flat.startswith("."):
        flat = "%2E" + flat[1:]
    if len(flat) > MAX_ID_CHARS:
        flat = f"{flat[:MAX_ID_CHARS - 17]}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    return flat


def _claim(layout: IndexLayout, described: dict, overwrite: bool) -> dict | None:
    """The earlier manifest to resume from, or ``None`` (a new index: the folder is new or empty, or was replaced).

    The one claim rule (:func:`clipeval.layout.claim`) over ``run.json``: the layout version and the
    source. An index written before ``run.json`` existed is judged by what its manifest records.
    """
    manifest = _read_manifest(layout)
    root = layout.root
    if root.exists() and any(root.iterdir()) and manifest is None and not layout.fingerprint.is_file():
        raise RunFolderMismatch(f"{root} is not empty and holds no clipeval index (no manifest.json of kind "
                                f"{IndexLayout.KIND!r}); choose a new or empty --out folder")
    if manifest is not None and not layout.fingerprint.is_file():
        write_json(layout.fingerprint, _fingerprint(manifest.get("version"), manifest.get("source") or {}))
    state = claim(layout.fingerprint, _fingerprint(IndexLayout.VERSION, described), overwrite,
                  holds_results=layout.vectors_dir.is_dir() and any(layout.vectors_dir.glob("*.npy")))
    if state == "replaced" or overwrite:
        _remove_index(layout)
        return None
    return manifest if state == "same" else None


def _fingerprint(version, source: dict) -> dict:
    """What a folder's index is: its layout version and its source (path, kind, reading options, id column)."""
    return {"layout_version": version, **source}


def _read_manifest(layout: IndexLayout) -> dict | None:
    try:
        manifest = json.loads(layout.manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == IndexLayout.KIND else None


def _remove_index(layout: IndexLayout) -> None:
    """Delete an index's own files (the query log, another kind of record, is kept)."""
    for folder in (layout.vectors_dir, layout.ann_dir, layout.thumbnails):
        shutil.rmtree(folder, ignore_errors=True)
    for file in (layout.items, layout.failed, layout.manifest):
        file.unlink(missing_ok=True)


def _remove_checkpoint_files(layout: IndexLayout, spec: str) -> None:
    for file in (layout.vectors(spec), layout.vector_ids(spec), layout.ann(spec), layout.ann_params(spec)):
        file.unlink(missing_ok=True)


def matched_rows(table: pd.DataFrame) -> list[bool]:
    """Whether each row's caption describes its image: its ``match`` cell (True/False, 1/0, yes/no), or every row
    when the table has no ``match`` column.

    Raises:
        ValueError: a ``match`` cell that is none of those.
    """
    if "match" not in table.columns:
        return [True] * len(table)
    spelled = table["match"].astype(str).str.strip().str.lower()
    known = spelled.isin(("true", "1", "1.0", "yes", "false", "0", "0.0", "no"))
    if not known.all():
        raise ValueError(f"the source's `match` column must be True/False in every row; row {int((~known).argmax())} "
                         f"holds {table['match'].iloc[int((~known).argmax())]!r}")
    return spelled.isin(("true", "1", "1.0", "yes")).tolist()


def _items(table: pd.DataFrame, reading: SourceOptions, options: IndexOptions, describes: list[bool]
           ) -> tuple[pd.DataFrame, list]:
    """One row per distinct image: id, its first input row and all its rows, image, its first caption and all its
    distinct captions, then the source's other columns (a column whose value differs between the rows of one image
    holds the list of its rows' values); and each item's image cell as read (a reference, bytes or a failed cell)."""
    image_column, caption_column = reading.image_column, reading.caption_column
    if image_column not in table.columns:
        raise ValueError(f"the source has no image column {image_column!r}; its columns: {list(table.columns)}")
    if options.id_column is not None and options.id_column not in table.columns:
        raise ValueError(f"the source has no id column {options.id_column!r}; its columns: {list(table.columns)}")
    cells = table[image_column].tolist()
    keys = [_image_key(cell, row) for row, cell in enumerate(cells)]
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    members = list(groups.values())
    firsts = [rows[0] for rows in members]
    texts = table[caption_column].tolist() if caption_column in table.columns else [None] * len(table)
    texts = ["" if text is None or _isnan(text) else str(text) for text in texts]
    captions = [list(dict.fromkeys(texts[row] for row in rows if describes[row] and texts[row].strip()))
                for rows in members]
    refs = [cells[row] for row in firsts]
    named = table[options.id_column].tolist() if options.id_column else cells
    n = len(members)
    items = pd.DataFrame({
        "id": item_ids([named[row] for row in firsts]),
        "row": np.asarray(firsts, dtype=np.int64),
        "rows": pd.Series([list(rows) for rows in members], dtype=object),
        "image": [ref if isinstance(ref, str) else ("" if ref is None or _isnan(ref) else f"<{type(ref).__name__}>")
                  for ref in refs],
        "caption": [texts_of_image[0] if texts_of_image else "" for texts_of_image in captions],
        "captions": pd.Series(captions, dtype=object),
        "status": "", "error": "", "width": pd.array([None] * n, dtype="Int64"),
        "height": pd.array([None] * n, dtype="Int64"), "sha256": ""})
    grouping = pd.Series(keys)
    for column in table.columns:
        if column in (image_column, caption_column):
            continue
        name = f"source_{column}" if str(column) in ITEM_COLUMNS else str(column)
        stored = _storable(table[column])
        if n == len(table) or (stored.astype(str).groupby(grouping, sort=False).nunique() <= 1).all():
            items[name] = stored.iloc[firsts].reset_index(drop=True)
        else:
            values = stored.tolist()
            items[name] = _storable(pd.Series([[values[row] for row in rows] for rows in members], dtype=object))
    return items, refs


def _image_key(cell, row: int) -> str:
    """What makes rows one image: the same reference, or the same bytes; a cell that is neither is its own item."""
    if isinstance(cell, str) and cell.strip():
        return "ref:" + cell
    if isinstance(cell, (bytes, bytearray)):
        return "sha256:" + hashlib.sha256(cell).hexdigest()
    return f"row:{row}"


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _storable(column: pd.Series) -> pd.Series:
    """A source column as Parquet stores it: numbers and booleans as they are, anything else as text (or null)."""
    if column.dtype != object:
        return column.reset_index(drop=True)
    values = [None if value is None or _isnan(value) else
              value if isinstance(value, (str, bool, int, float)) else
              json.dumps(value, default=str) if isinstance(value, (list, dict, tuple)) else str(value)
              for value in column]
    kinds = {type(value) for value in values if value is not None}
    if len(kinds) > 1:
        values = [None if value is None else str(value) for value in values]
    return pd.Series(values, dtype=object)


def _read_previous_items(layout: IndexLayout) -> dict[str, tuple] | None:
    """An earlier build's items by id: (sha256, status, error, width, height), to keep their thumbnails."""
    try:
        earlier = pd.read_parquet(layout.items, columns=["id", "sha256", "status", "error", "width", "height"])
    except (OSError, ValueError, KeyError):
        return None
    return {row.id: (row.sha256, row.status, row.error, row.width, row.height) for row in earlier.itertuples()}


def _read_images(items: pd.DataFrame, refs: list, base_dir: Path, layout: IndexLayout, embed: EmbedOptions,
                 options: IndexOptions, previous: dict | None) -> int:
    """Read every image once: its status, SHA-256, size and thumbnail (kept from an earlier build for equal bytes).

    Fills ``items``' status, error, width, height and sha256 columns; returns the thumbnails written.
    """
    layout.thumbnails.mkdir(parents=True, exist_ok=True)
    ids = items["id"].tolist()
    columns = {name: [None] * len(items) for name in ("status", "error", "width", "height", "sha256")}
    made = 0
    for part in progress_bar(list(batches(len(refs), options.block)), desc="reading images, thumbnails",
                             disable=not embed.progress):
        raws = read_many_bytes(refs[part], base_dir, embed.max_pixels, embed.fetch)
        for position, raw in zip(range(part.start, part.stop), raws):
            outcome = _read_one(raw, layout.thumbnail(ids[position]), (previous or {}).get(ids[position]),
                                embed.max_pixels, options.thumbnail_side)
            made += outcome.pop("made")
            for name, value in outcome.items():
                columns[name][position] = value
    for name, values in columns.items():
        items[name] = pd.array(values, dtype="Int64") if name in ("width", "height") else values
    wanted = {f"{item_id}.jpg" for item_id in ids}
    for file in layout.thumbnails.glob("*.jpg"):  # an earlier build's items that are gone
        if file.name not in wanted:
            file.unlink(missing_ok=True)
    return made


def _read_one(raw, thumbnail: Path, earlier: tuple | None, max_pixels: int, side: int) -> dict:
    """One image's status, error, size and digest; its thumbnail written unless an earlier build's is still right."""
    if raw.status != "ok":
        return {"status": raw.status, "error": raw.error, "width": None, "height": None, "sha256": "", "made": 0}
    if earlier is not None and earlier[0] == raw.digest and (earlier[1] != "ok" or thumbnail.exists()):
        status, error, width, height = earlier[1:]
        return {"status": status, "error": error, "width": None if pd.isna(width) else int(width),
                "height": None if pd.isna(height) else int(height), "sha256": raw.digest, "made": 0}
    decoded = decode_image(raw.data, max_pixels, side)
    if decoded.status != "ok":
        return {"status": decoded.status, "error": decoded.error, "width": None, "height": None,
                "sha256": raw.digest, "made": 0}
    write_thumbnail(decoded.image, thumbnail, side)
    # the stored size from the header (a JPEG decoded at reduced scale for its thumbnail has a smaller image)
    width, height = header_size(raw.data) or decoded.image.size
    return {"status": "ok", "error": "", "width": width, "height": height, "sha256": raw.digest, "made": 1}


def write_thumbnail(image: Image.Image, path: Path, side: int) -> None:
    """Save an RGB image as a JPEG whose long side is at most ``side`` pixels (never enlarged), atomically."""
    thumb = image.copy()
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    with atomic_path(path) as temp:
        temp.write_bytes(buffer.getvalue())


def _embed(items: pd.DataFrame, refs: list, base_dir: Path, embedder: Embedder, spec: str, embed: EmbedOptions,
           options: IndexOptions) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One checkpoint's float16 vectors of the ok rows, their positions, and every row without a vector."""
    statuses, digests = items["status"].tolist(), items["sha256"].tolist()
    vectors, positions, failures = [], [], []
    for part in progress_bar(list(batches(len(refs), options.block)), desc=f"embedding {spec}",
                             disable=not embed.progress):
        usable = [position for position in range(part.start, part.stop) if statuses[position] == "ok"]
        raws = read_many_bytes([refs[position] for position in usable], base_dir, embed.max_pixels, embed.fetch)
        embedded = embedder.images(raws)
        outcome = {position: embedded.errors.get(offset, (raw.status, raw.error))
                   for offset, (position, raw) in enumerate(zip(usable, raws))}
        for offset, (position, raw) in enumerate(zip(usable, raws)):
            if raw.status == "ok" and raw.digest != digests[position]:  # replaced since it was read for its row
                embedded.rows[offset] = -1
                outcome[position] = ("changed", "the image changed while the index was built; run it again")
            if embedded.rows[offset] >= 0:
                continue
            status, error = outcome[position]
            failures.append(_failure(items, position, spec, status or "decode_error", error))
        good = np.flatnonzero(embedded.rows >= 0)
        if len(good):
            vectors.append(embedded.of(good).numpy().astype(VECTOR_DTYPE))
            positions += [usable[offset] for offset in good]
        for position in range(part.start, part.stop):
            if statuses[position] != "ok":
                failures.append(_failure(items, position, spec, statuses[position], items.at[position, "error"]))
    failures.sort(key=lambda failure: failure["row"])
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=VECTOR_DTYPE)
    return stacked, np.asarray(positions, dtype=np.int64), failures


def _failure(items: pd.DataFrame, position: int, spec: str, status: str, error: str) -> dict:
    return {"id": items.at[position, "id"], "row": int(items.at[position, "row"]), "image": items.at[position, "image"],
            "checkpoint": spec, "status": status, "error": error}


def _text_dim(embedder: Embedder) -> int:
    """The embedding dimension when no image could be embedded (the model's text side tells it)."""
    return int(embedder.texts(["an image"]).vectors.shape[1])


def _save_vectors(layout: IndexLayout, spec: str, vectors: np.ndarray, positions: np.ndarray) -> None:
    for path, array in ((layout.vector_ids(spec), positions), (layout.vectors(spec), vectors)):
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            np.save(handle, array)


def _build_ann(layout: IndexLayout, spec: str, vectors: np.ndarray, items: pd.DataFrame, embedder: Embedder,
               options: IndexOptions, progress: bool) -> dict | None:
    """Build and save the approximate index when the rule (:func:`clipeval.finder.ann.choose_ann`) asks for one,
    or always with ``options.ann == "always"``; its search parameter is calibrated on the collection's captions
    (up to :data:`clipeval.finder.ann.CALIBRATION_QUERIES` of them, embedded by the checkpoint) when it has some."""
    from clipeval.finder import ann

    if options.ann == "never" or not len(vectors):
        return None
    n, dim = vectors.shape
    budget = int(options.ann_memory_mb * 2**20)
    params = ann.ann_params(n, dim, budget) if options.ann == "always" else ann.choose_ann(n, dim, budget)
    if params is None:
        return None
    captions = list(dict.fromkeys(text for texts in items["captions"] for text in texts))
    if len(captions) > ann.CALIBRATION_QUERIES:
        chosen = np.random.default_rng(ann.SEED).choice(len(captions), ann.CALIBRATION_QUERIES, replace=False)
        captions = [captions[i] for i in np.sort(chosen)]
    queries = embedder.texts(captions).vectors.numpy().astype(np.float32) if captions else None
    start = time.perf_counter()
    index = ann.build_ann(vectors.astype(np.float32), params, progress=progress, calibration_queries=queries)
    build_s = round(time.perf_counter() - start, 3)
    index.save(layout.ann(spec))
    return {**index.params, "calibrated_on": "captions" if captions else "perturbed vectors", "build_s": build_s}


def _read_failed(layout: IndexLayout) -> dict[str, list[dict]]:
    """An earlier build's ``failed.csv`` rows by checkpoint."""
    if not layout.failed.exists():
        return {}
    table = pd.read_csv(layout.failed, dtype=str, keep_default_na=False)
    table["row"] = table["row"].astype(int)
    return {spec: rows.to_dict("records") for spec, rows in table.groupby("checkpoint", sort=False)}


def _write_failed(layout: IndexLayout, failed: dict[str, list[dict]], entries: dict) -> None:
    rows = [row for spec in entries for row in failed.get(spec, [])]
    write_csv(layout.failed, pd.DataFrame(rows, columns=list(FAILED_COLUMNS)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
