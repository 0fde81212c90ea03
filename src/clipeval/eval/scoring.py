"""Pair scoring: how similar is each image to its caption, under one or more checkpoints.

Rows are processed in chunks. Each chunk's image files are read once (bytes and their
SHA-256) and shared by every checkpoint; each checkpoint then embeds them through its
:class:`~clipeval.eval.embed.Embedder` (embedding cache, decode workers, batched encoding)
and scores a pair by the cosine of its two L2-normalised embeddings. A row whose image or
caption cannot be used keeps its place with a ``status`` and ``error`` and NaN scores.

:func:`score_pairs` returns everything in memory; :func:`score_to_dir` writes a run folder and
is resumable: each finished chunk is saved atomically under ``<out>/.parts/``, and re-running
the same command skips the chunks already there (and says how many), ending with the same
``results.csv``. A folder holding a run with other inputs, checkpoints or options is refused
(:class:`RunFolderMismatch`) unless ``overwrite`` is set, so two runs are never mixed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipeval.atomic import write_csv, write_json, write_text
from clipeval.data.captions import check_caption
from clipeval.data.fetch import FetchOptions
from clipeval.data.images import header_size, read_many_bytes
from clipeval.eval.embed import Embedder, EmbedOptions, LazyEncoder, batches, embed_images, embed_texts
from clipeval.eval.stats import StageTimer, format_stats_log, package_versions
from clipeval.models.encoder import Encoder, resolve_device
from clipeval.progress import progress_bar

RESULT_COLUMNS = ("similarity", "clip_score_100", "caption_truncated", "image_width", "image_height", "status", "error")
SCORE_COLUMNS = ("row_id", "checkpoint", "cosine", "clip_score_100", "clip_score_2_5", "caption_truncated",
                 "image_width", "image_height", "status", "error")


def clip_score_100(cosine):
    """torchmetrics' CLIPScore scale, per sample: ``100 * max(cos, 0)``."""
    return 100.0 * np.maximum(cosine, 0.0)


def clip_score_2_5(cosine):
    """The CLIPScore paper's scale (Hessel et al. 2021): ``2.5 * max(cos, 0)``."""
    return 2.5 * np.maximum(cosine, 0.0)


@dataclass
class ScoreOptions:
    """How to read the pairs and run the models.

    Attributes:
        image_column: column with image paths (relative to ``base_dir``) or URLs.
        caption_column: column with captions.
        base_dir: folder relative image paths are resolved against.
        batch_size: images / captions per forward pass.
        chunk_size: rows read, scored and saved together (the unit of resuming).
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (autocast on CUDA only).
        progress: show a progress bar.
        workers: concurrent image reads / downloads.
        fetch: URL fetching options (timeout, retries, size cap, cache folder).
        decode_workers: processes decoding and preprocessing images while the model encodes
            (``None``: the device's default, see :class:`~clipeval.eval.embed.EmbedOptions`).
        fast_decode: decode large JPEGs at reduced scale first (see README, "Speed").
        embedding_cache: read and write the embedding cache.
        embedding_cache_dir: its folder (``None``: ``$CLIPEVAL_EMBEDDING_CACHE`` or
            ``outputs/cache/embeddings``).
    """

    image_column: str = "image"
    caption_column: str = "caption"
    base_dir: str | None = None
    batch_size: int = 32
    chunk_size: int = 256
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True
    workers: int = 8
    fetch: FetchOptions = field(default_factory=FetchOptions)
    decode_workers: int | None = None
    fast_decode: bool = False
    embedding_cache: bool = True
    embedding_cache_dir: str | Path | None = None

    def embed_options(self) -> EmbedOptions:
        """The embedding pipeline's share of these options."""
        return EmbedOptions(batch_size=self.batch_size, workers=self.workers, decode_workers=self.decode_workers,
                            fast_decode=self.fast_decode, cache=self.embedding_cache,
                            cache_dir=self.embedding_cache_dir, fetch=self.fetch)


class RunFolderMismatch(ValueError):
    """The output folder holds a run with other inputs, checkpoints or options."""


@dataclass
class ScoreRun:
    """Output of a scoring run.

    Attributes:
        results: input rows in input order with every input column plus ``RESULT_COLUMNS``
            for the primary (first) checkpoint.
        scores: tidy long table, one row per pair x checkpoint, columns ``SCORE_COLUMNS``.
        stats: per-stage time and memory (the content of ``stats.json``).
    """

    results: pd.DataFrame
    scores: pd.DataFrame
    stats: dict = field(default_factory=dict)


def _row_statuses(chunk: pd.DataFrame, options: ScoreOptions, timer: StageTimer):
    """Read the chunk's image files once; return (raw images, statuses, errors, header sizes) per row."""
    with timer.stage("image_read", items=len(chunk)):
        raws = read_many_bytes(chunk[options.image_column].tolist(), options.base_dir, workers=options.workers,
                               fetch_options=options.fetch)
        sizes = [header_size(raw.data) for raw in raws]
    statuses, errors = [], []
    for raw, caption in zip(raws, chunk[options.caption_column]):
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

    Use as a context manager: each checkpoint's :class:`Embedder` (its decode workers and
    cache connection) lives until the end of the run.
    """

    def __init__(self, checkpoints: list[str], options: ScoreOptions):
        if not checkpoints:
            raise ValueError("give at least one checkpoint spec")
        self.checkpoints = list(dict.fromkeys(checkpoints))
        self.options = options
        self.device = resolve_device(options.device)
        self.shared = StageTimer(self.device)
        self.timers = {spec: StageTimer(self.device) for spec in self.checkpoints}
        self.truncated = dict.fromkeys(self.checkpoints, 0)
        self.embedders: dict[str, Embedder] = {}

    def __enter__(self) -> ChunkScorer:
        return self

    def __exit__(self, *exc) -> None:
        for embedder in reversed(list(self.embedders.values())):  # reverse: thread counts restored in order
            embedder.__exit__(*exc)

    def embedder(self, spec: str) -> Embedder:
        if spec not in self.embedders:
            options = self.options
            lazy = LazyEncoder(spec, options.device, options.precision, self.timers[spec], options.progress)
            self.embedders[spec] = Embedder(lazy, self.options.embed_options(), self.timers[spec]).__enter__()
        return self.embedders[spec]

    def score_chunk(self, chunk: pd.DataFrame) -> pd.DataFrame:
        raws, statuses, errors, sizes = _row_statuses(chunk, self.options, self.shared)
        captions = chunk[self.options.caption_column].tolist()
        parts = []
        for spec in self.checkpoints:
            embedder = self.embedder(spec)
            row_statuses, row_errors = list(statuses), list(errors)
            cosine, truncated = _score_chunk(embedder, raws, captions, row_statuses, row_errors)
            self.truncated[spec] += int(truncated.sum())
            parts.append(_long_rows(chunk.index.to_numpy(), spec, cosine, truncated, sizes, row_statuses, row_errors))
        return pd.concat(parts, ignore_index=True)

    def stats(self, scores: pd.DataFrame, chunks_total: int, chunks_resumed: int) -> dict:
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
                "decode_workers": embedder.workers if embedder else None,
                "cache": embedder.cache_counts() if embedder else None,
                **summary,
            }
        status_counts = scores.drop_duplicates("row_id")["status"].value_counts().to_dict() if len(scores) else {}
        return {"pairs": int(scores["row_id"].nunique()) if len(scores) else 0,
                "status_counts": status_counts,
                "device": str(self.device), "batch_size": self.options.batch_size,
                "chunk_size": self.options.chunk_size, "chunks_total": chunks_total,
                "chunks_resumed": chunks_resumed, "fast_decode": self.options.fast_decode,
                "embedding_cache": (str(self.embedders[self.checkpoints[0]].cache.folder)
                                    if self.embedders and self.embedders[self.checkpoints[0]].cache else None),
                "versions": package_versions(),
                "shared": shared, "checkpoints": per_checkpoint}


def _chunks(pairs: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [pairs.iloc[s] for s in batches(len(pairs), size)] if len(pairs) else []


def _progress(total: int, enabled: bool, initial: int = 0):
    return progress_bar(total=total, initial=initial, unit="pair", desc="scoring", disable=not enabled)


def assemble_results(pairs: pd.DataFrame, scores: pd.DataFrame, primary: str) -> pd.DataFrame:
    """Join the primary checkpoint's scores onto the input rows, keeping order and columns."""
    mine = scores[scores["checkpoint"] == primary].set_index("row_id").reindex(range(len(pairs)))
    results = pairs.reset_index(drop=True).copy()
    results["similarity"] = mine["cosine"].to_numpy()
    results["clip_score_100"] = mine["clip_score_100"].to_numpy()
    for column in ("caption_truncated", "image_width", "image_height"):
        results[column] = mine[column].array
    results["status"] = mine["status"].to_numpy()
    results["error"] = mine["error"].fillna("").to_numpy()
    return results


def _prepare_pairs(pairs: pd.DataFrame, options: ScoreOptions) -> pd.DataFrame:
    """Refuse output-column clashes and missing columns; take ``base_dir`` from the table; index 0..n-1."""
    clash = [c for c in RESULT_COLUMNS if c in pairs.columns]
    if clash:
        raise ValueError(f"the pairs table already has column(s) {clash}; rename them, they are outputs")
    missing = [c for c in (options.image_column, options.caption_column) if c not in pairs.columns]
    if missing:
        raise ValueError(f"the pairs table has no column(s) {missing}; found {list(pairs.columns)}")
    if options.base_dir is None:
        options.base_dir = pairs.attrs.get("base_dir")
    return pairs.reset_index(drop=True)


def score_pairs(pairs: pd.DataFrame, checkpoints: list[str], options: ScoreOptions | None = None) -> ScoreRun:
    """Score every pair under every checkpoint, in memory.

    Args:
        pairs: the pairs table (e.g. from :func:`clipeval.data.sources.read_pairs`).
        checkpoints: checkpoint specs; the first is the primary one used in ``results``.
        options: reading and batching options.

    Returns:
        A :class:`ScoreRun` with ``results``, the long ``scores`` table and ``stats``.
    """
    options = options or ScoreOptions()
    pairs = _prepare_pairs(pairs, options)
    chunks = _chunks(pairs, options.chunk_size)
    parts = []
    with ChunkScorer(checkpoints, options) as scorer, _progress(len(pairs), options.progress) as bar:
        for chunk in chunks:
            parts.append(scorer.score_chunk(chunk))
            bar.update(len(chunk))
    scores = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(SCORE_COLUMNS))
    scores = scores.sort_values(["checkpoint", "row_id"], key=_checkpoint_order(scorer.checkpoints),
                                kind="stable", ignore_index=True)
    return ScoreRun(assemble_results(pairs, scores, scorer.checkpoints[0]), scores,
                    scorer.stats(scores, len(chunks), 0))


def _checkpoint_order(checkpoints: list[str]):
    order = {spec: i for i, spec in enumerate(checkpoints)}
    return lambda column: column.map(order) if column.name == "checkpoint" else column


def _fingerprint(pairs: pd.DataFrame, checkpoints: list[str], options: ScoreOptions) -> dict:
    """What identifies a run: its input, its checkpoints and the options that change its rows."""
    table = hashlib.sha256(pd.util.hash_pandas_object(pairs, index=True).to_numpy().tobytes()).hexdigest()
    return {"input_sha256": table, "checkpoints": checkpoints,
            "options": {"image_column": options.image_column, "caption_column": options.caption_column,
                        "base_dir": str(options.base_dir) if options.base_dir else None,
                        "batch_size": options.batch_size, "chunk_size": options.chunk_size,
                        "precision": options.precision, "fast_decode": options.fast_decode,
                        "columns": list(SCORE_COLUMNS)}}


def _differences(earlier: dict, now: dict) -> list[str]:
    names = {"input_sha256": "the input table", "checkpoints": "the checkpoints"}
    differ = [names[key] for key in names if earlier.get(key) != now[key]]
    options = earlier.get("options", {})
    differ += [f"{key} ({options.get(key)!r} then, {value!r} now)" for key, value in now["options"].items()
               if options.get(key) != value]
    return differ


def _check_run_folder(out_dir: Path, fingerprint: dict, overwrite: bool) -> None:
    """Refuse a folder whose earlier run (finished or not) had other inputs, checkpoints or options."""
    for path in (out_dir / ".parts" / "fingerprint.json", out_dir / "run.json"):
        if not path.exists():
            continue
        try:
            earlier = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            earlier = {}
        differ = _differences(earlier, fingerprint)
        if differ and not overwrite:
            raise RunFolderMismatch(f"{out_dir} holds an earlier run with different {', '.join(differ)}; "
                                    "use a new --out folder, or --overwrite to discard the earlier run")
        if differ:
            shutil.rmtree(out_dir / ".parts", ignore_errors=True)


def score_to_dir(pairs: pd.DataFrame, checkpoints: list[str], out_dir: str | Path,
                 options: ScoreOptions | None = None, overwrite: bool = False) -> ScoreRun:
    """Score pairs and write ``results.csv``, ``scores.csv``, ``stats.json``, ``stats.log`` and ``run.json``.

    Resumable: finished chunks are kept under ``<out_dir>/.parts/`` (each written atomically)
    until the run completes; running again with the same inputs skips them and prints how
    many it reused. Every output file is written atomically, so an interrupted run never
    leaves a half-written one.

    Args:
        pairs: the pairs table.
        checkpoints: checkpoint specs, primary first.
        out_dir: the run folder.
        options: reading and batching options.
        overwrite: discard an earlier run in ``out_dir`` that had other inputs, checkpoints or options.

    Returns:
        The :class:`ScoreRun` that was written.

    Raises:
        RunFolderMismatch: ``out_dir`` holds such an earlier run and ``overwrite`` is not set.
    """
    options = options or ScoreOptions()
    pairs = _prepare_pairs(pairs, options)
    out_dir = Path(out_dir)
    parts_dir = out_dir / ".parts"
    fingerprint = _fingerprint(pairs, list(dict.fromkeys(checkpoints)), options)
    _check_run_folder(out_dir, fingerprint, overwrite)
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json(parts_dir / "fingerprint.json", fingerprint)

    chunks = _chunks(pairs, options.chunk_size)
    part_paths = [parts_dir / f"chunk-{i:06d}.csv" for i in range(len(chunks))]
    resumed = sum(path.exists() for path in part_paths)
    if resumed:
        print(f"resuming {out_dir}: {resumed} of {len(chunks)} chunks reused from an interrupted run "
              f"with the same inputs", file=sys.stderr)
    done = sum(len(c) for c, p in zip(chunks, part_paths) if p.exists())
    with ChunkScorer(checkpoints, options) as scorer, _progress(len(pairs), options.progress, done) as bar:
        for chunk, path in zip(chunks, part_paths):
            if not path.exists():
                write_csv(path, scorer.score_chunk(chunk))
                bar.update(len(chunk))
    scores = (pd.concat([_read_part(path) for path in part_paths], ignore_index=True) if part_paths
              else pd.DataFrame(columns=list(SCORE_COLUMNS)))
    scores = scores.sort_values(["checkpoint", "row_id"], key=_checkpoint_order(scorer.checkpoints),
                                kind="stable", ignore_index=True)
    run = ScoreRun(assemble_results(pairs, scores, scorer.checkpoints[0]), scores,
                   scorer.stats(scores, len(chunks), resumed))
    write_csv(out_dir / "scores.csv", run.scores)
    write_csv(out_dir / "results.csv", run.results)
    write_json(out_dir / "stats.json", run.stats)
    write_text(out_dir / "stats.log", format_stats_log(run.stats))
    write_json(out_dir / "run.json", fingerprint)
    shutil.rmtree(parts_dir)
    return run


def _read_part(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={"checkpoint": str, "status": str, "error": str, "caption_truncated": "boolean",
                              "image_width": "Int64", "image_height": "Int64"}).fillna({"error": ""})


def zero_shot_probs(encoder: Encoder, image, captions: list[str]) -> np.ndarray:
    """Softmax over candidate captions for one image (CLIP's zero-shot classification).

    Logits are ``logit_scale * cosine`` (100 when the model has no learned scale).

    Args:
        encoder: a loaded encoder.
        image: an RGB PIL image.
        captions: the candidate captions.

    Returns:
        Probabilities, one per caption, summing to 1.

    Raises:
        ValueError: the model's transform rejects the image.
    """
    image_embedding = embed_images(encoder, [image])
    if image_embedding.errors:
        raise ValueError(f"cannot preprocess the image: {image_embedding.errors[0][1]}")
    cosine = (embed_texts(encoder, captions).of(range(len(captions))) @ image_embedding.vectors.T).squeeze(1)
    scale = encoder.logit_scale if encoder.logit_scale is not None else 100.0
    return torch.softmax(scale * cosine, dim=0).numpy()
