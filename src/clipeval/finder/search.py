"""Search an index folder by text, by image, or for items like an indexed one.

:meth:`FinderIndex.open` reads the manifest and ``items.parquet``; each checkpoint's float16
vectors are memory-mapped when first searched. A query is embedded through the same path the
index was built with (:class:`clipeval.embed.engine.Embedder`: text through ``texts``, an image
through :func:`clipeval.data.images.read_image_bytes` and ``images``, so the format allow-list
and the statuses hold for queries too), by an encoder loaded on the first query of its
checkpoint and kept; its weights must be those the index was built with. Queries are never
written to the embedding cache.

A command-line search is a fresh process, so it loads only what its query needs: a text query the
checkpoint for texts only (the family's ``load_text``; the whole model where the family has none,
or where the weights must be hashed), an image query the whole model, a similar-item query no
model (its vector is in the index). The embedding engine and the model libraries are imported on
a query's first use of them (docs/finder.md gives the measured stages).

The search is exact (inner product over every vector, block-wise) up to
:data:`clipeval.finder.ann.EXACT_UP_TO` vectors, and approximate above when the index holds an
approximate index for the checkpoint; ``exact=True`` or ``exact=False`` overrides the rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from clipeval.embed.options import EmbedOptions
from clipeval.finder import ann
from clipeval.layout import IndexLayout, checkpoint_slug
from clipeval.models.registry import weights_identity

if TYPE_CHECKING:  # the embedding engine imports torch: a similar-item query needs neither
    from clipeval.embed.engine import Embedder


def weights_files(spec: str) -> str | None:
    """A digest of the checkpoint's files' stat fingerprints and the model libraries' versions
    (:func:`clipeval.models.registry.weights_identity`), ``None`` for a hub name: while it is unchanged the files
    load the weights the index was built with, so a query need not hash them again."""
    identity = weights_identity(spec)
    return None if identity is None else hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class UnknownCheckpoint(ValueError):
    """The index holds no vectors for this checkpoint; the message lists those it holds."""


class UnknownItem(ValueError):
    """No item of the index has this id (or it has no vector under the checkpoint searched)."""


class QueryImageError(ValueError):
    """The query image cannot be used (missing, unreadable, a refused format...); the message gives its status."""


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        rank: 1 for the best.
        id: the item's id.
        score: cosine similarity of the query and the item (inner product of unit vectors).
        image: the image reference as the source gave it.
        caption: the item's first caption (may be empty).
        thumbnail: the thumbnail's path relative to the index folder (``thumbnails/<id>.jpg``).
        captions: every distinct caption the source gives the image, in row order.
    """

    rank: int
    id: str
    score: float
    image: str
    caption: str
    thumbnail: str
    captions: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Checkpoint:
    """One checkpoint's vectors (memory-mapped), their items, and its query embedders once loaded: the whole
    model's, or until an image query needs that one, the text tower's."""

    vectors: np.ndarray
    positions: np.ndarray
    embedder: Embedder | None = None
    text_embedder: Embedder | None = None
    ann_index: object | None = None


class FinderIndex:
    """An index folder opened for searching (see the module docstring).

    Attributes:
        layout: the folder's files.
        manifest: ``manifest.json``.
        checkpoints: the checkpoint specs, in manifest order (the first is the default).
        items: ``items.parquet``: one row per distinct image.
        complete: False while the build that wrote the folder has not finished.
    """

    def __init__(self, layout: IndexLayout, manifest: dict, items: pd.DataFrame, embed: EmbedOptions | None = None):
        self.layout = layout
        self.manifest = manifest
        self.items = items
        self.checkpoints = list(manifest.get("checkpoints", {}))
        self.complete = bool(manifest.get("complete", True))
        self.embed = embed or EmbedOptions()
        self._ids = {item_id: position for position, item_id in enumerate(items["id"])}
        self._loaded: dict[str, _Checkpoint] = {}
        self._lock = threading.RLock()

    @classmethod
    def open(cls, folder: str | Path, embed: EmbedOptions | None = None) -> FinderIndex:
        """Open an index folder written by ``clipeval index``.

        Args:
            folder: the index folder.
            embed: how query encoders run (device...); the precision and decode mode follow the index's build.

        Raises:
            FileNotFoundError: no index there.
            ValueError: the folder's manifest is not an index's, or of another layout version.
        """
        layout = IndexLayout(Path(folder))
        if not layout.manifest.is_file():
            raise FileNotFoundError(f"{layout.root} holds no index (no manifest.json); build one with "
                                    "`clipeval index SOURCE --out FOLDER --checkpoint SPEC`")
        manifest = json.loads(layout.manifest.read_text())
        if manifest.get("kind") != IndexLayout.KIND:
            raise ValueError(f"{layout.manifest} is not an index's (kind {manifest.get('kind')!r})")
        if manifest.get("version") != IndexLayout.VERSION:
            older = " (one item per row: an image with five captions comes back five times)" \
                if manifest.get("version") == 1 else ""
            source = (manifest.get("source") or {}).get("path") or "SOURCE"
            specs = " ".join(f"--checkpoint {spec}" for spec in manifest.get("checkpoints") or {}) \
                or "--checkpoint SPEC"
            raise ValueError(f"{layout.root} holds an index of layout version {manifest.get('version')}{older}; "
                             f"this clipeval reads version {IndexLayout.VERSION}: rebuild it with "
                             f"`clipeval index {source} --out {layout.root} {specs} --overwrite`")
        return cls(layout, manifest, pd.read_parquet(layout.items), embed)

    # --- checkpoints and items --------------------------------------------------------------------------------

    def checkpoint(self, name: str | None = None) -> str:
        """The spec of a checkpoint named by its spec or its file name (:func:`checkpoint_slug`); ``None``: the
        first.

        Raises:
            UnknownCheckpoint: the index holds no such checkpoint.
        """
        if not self.checkpoints:
            raise UnknownCheckpoint(f"{self.layout.root} holds no checkpoint's vectors yet")
        if name is None:
            return self.checkpoints[0]
        if name in self.checkpoints:
            return name
        for spec in self.checkpoints:
            if checkpoint_slug(spec) == name:
                return spec
        raise UnknownCheckpoint(f"the index has no checkpoint {name!r}; it has: {', '.join(self.checkpoints)}")

    def _position(self, item_id: str) -> int:
        position = self._ids.get(item_id)
        if position is None:
            raise UnknownItem(f"the index has no item with id {item_id!r}")
        return position

    def item(self, item_id: str) -> dict:
        """One item's row of ``items.parquet`` (id, image, caption, status, size, the source's columns), JSON-able.

        Raises:
            UnknownItem: no item has this id.
        """
        row = self.items.iloc[self._position(item_id)]
        return {str(name): _plain(value) for name, value in row.items()}

    def thumbnail_path(self, item_id: str) -> Path | None:
        """The item's thumbnail file, only ever inside ``<index>/thumbnails``; ``None`` for an unknown id or none."""
        if item_id not in self._ids:
            return None
        path = self.layout.thumbnail(item_id)
        folder = self.layout.thumbnails.resolve()
        try:
            resolved = path.resolve(strict=True)
        except OSError:
            return None
        return resolved if resolved.parent == folder and resolved.is_file() else None

    def _vectors(self, spec: str) -> _Checkpoint:
        with self._lock:
            if spec not in self._loaded:
                vectors = np.load(self.layout.vectors(spec), mmap_mode="r")
                if len(vectors) <= ann.EXACT_UP_TO:  # searched exactly: float32 in memory is 2.6x faster (bench_finder)
                    vectors = np.asarray(vectors, dtype=np.float32)
                positions = np.load(self.layout.vector_ids(spec))
                if len(vectors) != len(positions):
                    raise ValueError(f"{self.layout.vectors(spec)} and its ids differ in length; rebuild the index")
                self._loaded[spec] = _Checkpoint(vectors, positions)
            return self._loaded[spec]

    def vectors(self, checkpoint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A checkpoint's vectors and each one's position in :attr:`items`.

        Up to :data:`~clipeval.finder.ann.EXACT_UP_TO` vectors (searched exactly) they are float32 in memory;
        above, the float16 file memory-mapped.
        """
        loaded = self._vectors(self.checkpoint(checkpoint))
        return loaded.vectors, loaded.positions

    # --- queries ----------------------------------------------------------------------------------------------

    def _embedder(self, spec: str, text_only: bool = False) -> Embedder:
        """The checkpoint's query embedder, loaded once; its weights are checked against the index's.

        With ``text_only`` (a text query), the whole model's embedder if it is loaded, else one for texts only,
        unless the check must hash the weights (the checkpoint's files changed since the build, or a hub name),
        which takes the whole model.
        """
        from clipeval.embed.engine import Embedder, LazyEncoder

        loaded = self._vectors(spec)
        with self._lock:
            if loaded.embedder is not None or (text_only and loaded.text_embedder is not None):
                return loaded.embedder or loaded.text_embedder
            entry = self.manifest["checkpoints"][spec]
            unchanged = entry.get("weights_files") is not None and weights_files(spec) == entry["weights_files"]
            hashed = not unchanged and bool(entry.get("weights"))
            options = replace(self.embed, embedding_cache=False, decode_processes=0, encode_processes=0,
                              progress=False, fast_decode=bool(entry.get("fast_decode", False)),
                              decoder=entry.get("decoder", "pillow"), batch_size=1,
                              fetch=replace(self.embed.fetch, image_cache_dir=None))
            lazy = LazyEncoder(spec, options, text_only=text_only and not hashed)
            if lazy.device.type == entry.get("device"):
                lazy.precision = entry.get("precision") or lazy.precision
            embedder = Embedder(lazy, options)
            if hashed and embedder.encoder.weights_digest() != entry["weights"]:
                raise ValueError(f"checkpoint {spec} now loads other weights than the index was built with; "
                                 f"rebuild the index: clipeval index ... --checkpoint {spec} --overwrite")
            if embedder.encoder.text_only:  # a family without a text-only load gave the whole model
                loaded.text_embedder = embedder
            else:
                loaded.embedder, loaded.text_embedder = embedder, None
            return embedder

    def embed_text(self, text: str, checkpoint: str | None = None) -> np.ndarray:
        """A text query's unit vector ``(dim,)`` float32 under a checkpoint."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the text query is empty")
        embedder = self._embedder(self.checkpoint(checkpoint), text_only=True)
        with self._lock:
            return embedder.texts([text]).vectors[0].numpy().astype(np.float32)

    def embed_image(self, image: bytes | str | Path, checkpoint: str | None = None) -> np.ndarray:
        """An image query's unit vector ``(dim,)`` float32 under a checkpoint.

        Args:
            image: the image's bytes, or a path.

        Raises:
            QueryImageError: the image cannot be read, is not an accepted format, or cannot be decoded.
        """
        from clipeval.data.images import read_image_bytes

        spec = self.checkpoint(checkpoint)
        options = self.embed
        name = "the uploaded image" if isinstance(image, (bytes, bytearray)) else str(image)
        raw = read_image_bytes(bytes(image) if isinstance(image, bytearray) else image, None, options.max_pixels,
                               replace(options.fetch, image_cache_dir=None))
        if raw.status != "ok":
            raise QueryImageError(f"query image {name}: {raw.status}: {raw.error}")
        embedder = self._embedder(spec)
        with self._lock:
            embedded = embedder.images([raw])
        if embedded.rows[0] < 0:
            status, error = embedded.errors.get(0, ("decode_error", "it could not be embedded"))
            raise QueryImageError(f"query image {name}: {status}: {error}")
        return embedded.vectors[embedded.rows[0]].numpy().astype(np.float32)

    def uses_ann(self, checkpoint: str | None = None, exact: bool | None = None) -> bool:
        """Whether a search under ``checkpoint`` is approximate: ``exact=None`` applies the rule (approximate above
        :data:`clipeval.finder.ann.EXACT_UP_TO` vectors when an approximate index exists).

        Raises:
            ValueError: ``exact=False`` and the checkpoint has no approximate index.
        """
        spec = self.checkpoint(checkpoint)
        present = self.layout.ann(spec).is_file()
        if exact is None:
            return present and len(self._vectors(spec).vectors) > ann.EXACT_UP_TO
        if not exact and not present:
            raise ValueError(f"checkpoint {spec} has no approximate index in {self.layout.root} (one is built only "
                             f"above {ann.EXACT_UP_TO} vectors); search it exactly")
        return not exact

    def search_vector(self, query: np.ndarray, checkpoint: str | None = None, k: int = 10,
                      exact: bool | None = None, exclude: int | None = None) -> list[Hit]:
        """The ``k`` items nearest a unit query vector under a checkpoint, best first.

        Args:
            query: ``(dim,)`` unit vector in the checkpoint's space.
            checkpoint: spec or file name; ``None`` the first.
            k: results wanted (fewer when the index holds fewer vectors).
            exact: ``None`` the rule, ``True`` exact, ``False`` approximate.
            exclude: an item position left out of the results (the item a ``similar`` query starts from).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        spec = self.checkpoint(checkpoint)
        loaded = self._vectors(spec)
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if not len(loaded.vectors):
            return []
        if query.shape[1] != loaded.vectors.shape[1]:
            raise ValueError(f"the query has {query.shape[1]} dimensions, checkpoint {spec}'s vectors "
                             f"{loaded.vectors.shape[1]}")
        wanted = min(k + (exclude is not None), len(loaded.vectors))
        if wanted == 0:
            return []
        if self.uses_ann(spec, exact):
            with self._lock:
                if loaded.ann_index is None:
                    loaded.ann_index = ann.AnnIndex.load(self.layout.ann(spec))
            scores, rows = loaded.ann_index.search(query, wanted)
        else:
            scores, rows = ann.exact_search(loaded.vectors, query, wanted)
        hits = []
        for score, row in zip(scores[0], rows[0]):
            if row < 0:  # an approximate index may return fewer than asked
                continue
            position = int(loaded.positions[row])
            if position == exclude:
                continue
            hits.append((float(score), position))
        return [self._hit(rank, position, score) for rank, (score, position) in enumerate(hits[:k], start=1)]

    def _hit(self, rank: int, position: int, score: float) -> Hit:
        row = self.items.iloc[position]
        return Hit(rank, str(row["id"]), score, str(row["image"]), str(row["caption"]),
                   f"{self.layout.thumbnails.name}/{row['id']}.jpg", [str(text) for text in row["captions"]])

    def search_text(self, text: str, checkpoint: str | None = None, k: int = 10,
                    exact: bool | None = None) -> list[Hit]:
        """The ``k`` items best matching a text, best first."""
        return self.search_vector(self.embed_text(text, checkpoint), checkpoint, k, exact)

    def search_image(self, image: bytes | str | Path, checkpoint: str | None = None, k: int = 10,
                     exact: bool | None = None) -> list[Hit]:
        """The ``k`` items most like an image (its bytes or a path), best first; an indexed image finds itself."""
        return self.search_vector(self.embed_image(image, checkpoint), checkpoint, k, exact)

    def similar(self, item_id: str, checkpoint: str | None = None, k: int = 10, exact: bool | None = None) -> list[Hit]:
        """The ``k`` items most like an indexed item (its stored vector; no encoder needed), the item itself left out.

        Raises:
            UnknownItem: no such id, or the item has no vector under the checkpoint (its status says why).
        """
        spec = self.checkpoint(checkpoint)
        position = self._position(item_id)
        loaded = self._vectors(spec)
        rows = np.flatnonzero(loaded.positions == position)
        if not len(rows):
            raise UnknownItem(f"item {item_id!r} has no vector under {spec} (status "
                              f"{self.items.iloc[position]['status']}; see failed.csv)")
        query = np.asarray(loaded.vectors[rows[0]], dtype=np.float32)
        return self.search_vector(query, spec, k, exact, exclude=position)


def overlap(first: list[Hit], second: list[Hit]) -> dict:
    """How two result lists agree: the ids they share (``count``) and the Jaccard index of their id sets."""
    a, b = {hit.id for hit in first}, {hit.id for hit in second}
    union = a | b
    return {"count": len(a & b), "jaccard": len(a & b) / len(union) if union else 1.0}


def _plain(value):
    """A parquet cell as plain JSON: numpy scalars as Python numbers, missing values as ``None``."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    return value


def run_query(index: FinderIndex, text: str | None = None, image: bytes | str | Path | None = None,
              similar: str | None = None, checkpoints: list[str] | None = None, k: int = 10,
              exact: bool | None = None) -> dict:
    """One query (a text, an image or an item's id) under one or more checkpoints, as JSON-able data.

    Returns:
        ``{"query": {"kind", "value"}, "k", "checkpoints": [{"spec", "search": "exact"|"approximate",
        "vectors", "hits": [Hit as dict]}], "overlap": {"count", "jaccard"} or None}``; the overlap
        is of the first two checkpoints' top k (by id).
    """
    given = [(kind, value) for kind, value in (("text", text), ("image", image), ("similar", similar))
             if value is not None]
    if len(given) != 1:
        raise ValueError("give one query: a text, an image or an item's id")
    kind, value = given[0]
    specs = [index.checkpoint(name) for name in (checkpoints or [None])]
    if len(set(specs)) != len(specs):
        raise ValueError(f"a checkpoint is given twice: {specs}")
    results = []
    for spec in specs:
        if kind == "text":
            hits = index.search_text(value, spec, k, exact)
        elif kind == "image":
            hits = index.search_image(value, spec, k, exact)
        else:
            hits = index.similar(value, spec, k, exact)
        results.append({"spec": spec, "search": "approximate" if index.uses_ann(spec, exact) else "exact",
                        "vectors": len(index.vectors(spec)[0]), "hits": [hit.to_dict() for hit in hits]})
    shared = None
    if len(results) >= 2:
        shared = overlap(*[[Hit(**hit) for hit in result["hits"]] for result in results[:2]])
    shown = value if isinstance(value, str) else str(value) if isinstance(value, Path) else "<image bytes>"
    return {"query": {"kind": kind, "value": shown}, "k": k, "checkpoints": results, "overlap": shared}


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def readable_ids(ids: list[str], width: int) -> tuple[dict[str, str], str]:
    """How each id is shown in a column ``width`` characters wide, so that different ids read differently.

    Ids that fit are shown whole. Otherwise the leading part every id shares, up to its last separator
    (``~``, ``/``, ``_``, ``-``, ``.``), is written ``…``, and an id still too long keeps its end (where file names and
    numbers differ), never its start. If two ids would still read the same, all are shown whole.

    Returns:
        ``({id: shown}, the shared part written as "…" or "")``.
    """
    distinct = list(dict.fromkeys(ids))
    if all(len(item) <= width for item in distinct):
        return {item: item for item in distinct}, ""
    first, last = min(distinct), max(distinct)  # the start all share is the start these two share
    length = next((n for n, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    shared = first[:length] if len(distinct) > 1 else ""
    cut = max(shared.rfind(separator) for separator in "~/_-.") + 1 if shared else 0
    shown = {}
    for item in distinct:
        text = "…" + item[cut:] if cut else item
        shown[item] = text if len(text) <= width else "…" + item[-(width - 1):]
    if len(set(shown.values())) < len(shown):
        return {item: item for item in distinct}, ""
    return shown, shared[:cut]


def _first_caption(hit: dict, width: int) -> str:
    """An item's first caption, with how many more it has: ``a red car (+4)``."""
    captions = hit.get("captions") or ([hit["caption"]] if hit["caption"] else [])
    more = f" (+{len(captions) - 1})" if len(captions) > 1 else ""
    return _clip(captions[0], width - len(more)) + more if captions else ""


def format_results(result: dict, width: int = 48) -> str:
    """:func:`run_query`'s result as a readable table: rank, score, id and image, each item's captions below it;
    with several checkpoints their lists side by side (score, id and first caption each, with how many more it
    has) and the overlap of their top k."""
    query = result["query"]
    lines = [f"{query['kind']} query: {query['value']}"]
    blocks = result["checkpoints"]
    for number, block in enumerate(blocks, start=1):
        label = f"[{number}] " if len(blocks) > 1 else ""
        lines.append(f"{label}{block['spec']}: {block['search']} search over {block['vectors']} images")
    ids, shared = readable_ids([hit["id"] for block in blocks for hit in block["hits"]],
                               width if len(blocks) == 1 else width // 2)
    images, _ = readable_ids([hit["image"] for hit in blocks[0]["hits"]], width)
    if not any(block["hits"] for block in blocks):
        lines.append("(no results)")
    elif len(blocks) == 1:
        hits = blocks[0]["hits"]
        table = pd.DataFrame([[str(hit["rank"]), f"{hit['score']:.4f}", ids[hit["id"]], images[hit["image"]]]
                              for hit in hits], columns=["rank", "score", "id", "image"])
        header, *rows = table.to_string(index=False, justify="left").splitlines()
        lines.append(header)
        indent = " " * (len(header) - len(header.lstrip()) + 6)
        for row, hit in zip(rows, hits):
            lines.append(row)
            lines += [f"{indent}· {_clip(text, 2 * width)}" for text in hit.get("captions") or [hit["caption"]] if text]
    else:
        depth = max(len(block["hits"]) for block in blocks)
        rows = []
        for rank in range(depth):
            row = [str(rank + 1)]
            for block in blocks:
                hit = block["hits"][rank] if rank < len(block["hits"]) else None
                row += ([f"{hit['score']:.4f}", ids[hit["id"]], _first_caption(hit, width // 2)]
                        if hit else ["", "", ""])
            rows.append(row)
        columns = ["rank"] + [f"[{number}] {name}" for number in range(1, len(blocks) + 1)
                              for name in ("score", "id", "caption")]
        lines.append(pd.DataFrame(rows, columns=columns).to_string(index=False))
    if shared:
        lines.append(f"ids shortened: … stands for {shared!r}, the start every id shown shares (--json: whole ids)")
    if result.get("overlap") is not None:
        both = result["overlap"]
        lines.append(f"overlap of [1] and [2] top {result['k']}: {both['count']} shared ids "
                     f"(Jaccard {both['jaccard']:.3f})")
    return "\n".join(lines)
