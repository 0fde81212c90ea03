"""Pair scoring: how similar is each image to its caption, under one or more checkpoints.

:class:`ChunkScorer` scores consecutive rows of a shard. Each chunk's image files are read once
(bytes and their SHA-256) and shared by every checkpoint; each checkpoint then embeds them through
its :class:`~clipeval.embed.engine.Embedder` (embedding cache, decode processes, batched encoding)
and scores a pair by the cosine of its two L2-normalised embeddings. A row whose image or caption
cannot be used keeps its place with a ``status`` and ``error`` and NaN scores. The pipeline
(:mod:`clipeval.pipeline`) runs it over shards; a pairs table is one shard.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.captions import check_caption
from clipeval.data.images import header_size, read_many_bytes
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.embed.stats import StageTimer, package_versions
from clipeval.layout import SCORE_COLUMNS
from clipeval.metrics.scales import clip_score_2_5, clip_score_100
from clipeval.models.encoder import resolve_device


def _row_statuses(images: list, captions, base_dir: str | None, options: EmbedOptions, timer: StageTimer):
    """Read the chunk's image files once; return (raw images, statuses, errors, header sizes) per row."""
    with timer.stage("image_read", items=len(images)):
        raws = read_many_bytes(images, Path(base_dir) if base_dir else None, options.max_pixels, options.fetch)
        sizes = [header_size(raw.data) for raw in raws]
    statuses, errors = [], []
    for raw, caption in zip(raws, captions):
        status, error = (raw.status, raw.error) if raw.status != "ok" else check_caption(caption)
        statuses.append(status)
        errors.append(error)
    return raws, statuses, errors, sizes


def _score_chunk(embedder: Embedder, raws, captions, statuses, errors) -> tuple[np.ndarray, pd.array]:
    """Cosine per row of the chunk (NaN where the row is not ok) and whether the model truncated
    each scored caption (missing where the row is not ok); updates statuses in place.

    Rows that are not ok are skipped; an image that fails to decode or that the transform
    rejects gives its rows that status. Distinct images and captions are embedded once.
    """
    image_embeddings = embedder.images([raw if status == "ok" else None for raw, status in zip(raws, statuses)])
    for i, (status, reason) in image_embeddings.errors.items():
        statuses[i], errors[i] = status, reason
    rows = [i for i, status in enumerate(statuses) if status == "ok"]
    cosine = np.full(len(statuses), np.nan)
    truncated = pd.array([pd.NA] * len(statuses), dtype="boolean")
    if not rows:
        return cosine, truncated
    text_embeddings = embedder.texts([captions[i] if statuses[i] == "ok" else None for i in range(len(captions))])
    with embedder.timer.stage("score", items=len(rows)):
        cosine[rows] = (image_embeddings.of(rows) * text_embeddings.of(rows)).sum(dim=-1).numpy()
    truncated[rows] = text_embeddings.truncated[rows]
    return cosine, truncated


def _long_rows(row_ids, spec: str, cosine: np.ndarray, truncated, sizes, statuses, errors) -> pd.DataFrame:
    return pd.DataFrame({"row_id": row_ids, "checkpoint": spec, "cosine": cosine,
                         "clip_score_100": clip_score_100(cosine), "clip_score_2_5": clip_score_2_5(cosine),
                         "caption_truncated": truncated,
                         "image_width": pd.array([size[0] if size else None for size in sizes], dtype="Int64"),
                         "image_height": pd.array([size[1] if size else None for size in sizes], dtype="Int64"),
                         "status": statuses, "error": errors}, columns=list(SCORE_COLUMNS))


class ChunkScorer:
    """Loads each checkpoint once (lazily) and scores chunks of rows, timing every stage.

    Use as a context manager: each checkpoint's :class:`Embedder` (its decode processes and cache
    connection) lives until the end of the run.

    Args:
        checkpoints: checkpoint specs (duplicates count once).
        options: the embedding pipeline's options.
        image_column, caption_column: the columns of the chunks.

    Attributes:
        base_dir: the folder relative image paths of the next chunks are resolved against.
    """

    def __init__(self, checkpoints: list[str], options: EmbedOptions, image_column: str = "image",
                 caption_column: str = "caption"):
        if not checkpoints:
            raise ValueError("give at least one checkpoint spec")
        self.checkpoints = list(dict.fromkeys(checkpoints))
        self.options = options
        self.image_column, self.caption_column = image_column, caption_column
        self.base_dir: str | None = None
        self.device = resolve_device(options.device)
        self.shared = StageTimer(self.device)
        self.timers = {spec: StageTimer(self.device) for spec in self.checkpoints}
        self.truncated = dict.fromkeys(self.checkpoints, 0)
        self.rows_scored = 0
        self.status_counts: dict[str, int] = {}
        self.embedders: dict[str, Embedder] = {}

    def __enter__(self) -> ChunkScorer:
        return self

    def __exit__(self, *exc) -> None:
        for embedder in reversed(list(self.embedders.values())):  # reverse: thread counts restored in order
            embedder.__exit__(*exc)

    def embedder(self, spec: str) -> Embedder:
        if spec not in self.embedders:
            lazy = LazyEncoder(spec, self.options, self.timers[spec])
            self.embedders[spec] = Embedder(lazy, self.options, self.timers[spec]).__enter__()
        return self.embedders[spec]

    def score_chunk(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The chunk's rows under every checkpoint, long (:data:`SCORE_COLUMNS`; ``row_id`` is the chunk's index)."""
        captions = chunk[self.caption_column].tolist()
        raws, statuses, errors, sizes = _row_statuses(chunk[self.image_column].tolist(), captions, self.base_dir,
                                                      self.options, self.shared)
        parts = []
        for spec in self.checkpoints:
            embedder = self.embedder(spec)
            row_statuses, row_errors = list(statuses), list(errors)
            cosine, truncated = _score_chunk(embedder, raws, captions, row_statuses, row_errors)
            self.truncated[spec] += int(truncated.sum())
            parts.append(_long_rows(chunk.index.to_numpy(), spec, cosine, truncated, sizes, row_statuses, row_errors))
        self.rows_scored += len(chunk)
        for status in parts[0]["status"]:
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
        return pd.concat(parts, ignore_index=True)

    def stats(self, chunks_total: int, chunks_resumed: int) -> dict:
        """Time, memory, cache and throughput of the rows scored so far (the content of ``stats.json``)."""
        per_checkpoint = {}
        shared = self.shared.summary()
        for spec in self.checkpoints:
            summary = self.timers[spec].summary()
            scored = int(summary["stages"].get("score", {}).get("items", 0))
            work = shared["wall_s"] + summary["wall_s"] - summary["stages"].get("model_load", {}).get("wall_s", 0.0)
            embedder = self.embedders.get(spec)
            encoder = embedder.loaded if embedder else None
            per_checkpoint[spec] = {
                "model_loaded": encoder is not None,
                "precision": embedder.lazy.precision if embedder else None,
                "description": encoder.description if encoder else None,
                "pairs_scored": scored,
                "pairs_per_s": scored / work if work else None,
                "captions_truncated": self.truncated[spec],
                "context_length": encoder.context_length if encoder else None,
                "decode_processes": embedder.decode_processes if embedder else None,
                "encode_processes": embedder.encode_processes if embedder else None,
                "cache": embedder.cache_counts() if embedder else None,
                **summary,
            }
        first = self.embedders.get(self.checkpoints[0])
        return {"pairs": self.rows_scored, "status_counts": dict(self.status_counts),
                "device": str(self.device), "batch_size": self.options.batch_size,
                "chunks_total": chunks_total, "chunks_resumed": chunks_resumed, "fast_decode": self.options.fast_decode,
                "decoder": self.options.decoder,
                "embedding_cache": str(first.cache.folder) if first and first.cache else None,
                "versions": package_versions(), "shared": shared, "checkpoints": per_checkpoint}

