"""The one read → decode → preprocess → encode path: every embedding the project computes comes from here.

Scoring, retrieval, the scenes benchmark and training's validation all embed through it, so duplicate inputs,
the cache, images that fail and the stage timings are handled one way everywhere. docs/speed.md describes the
pipeline, its process layouts (decode processes, encode processes, the device decoder) and the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipeval.data.images import RawImage, read_images, read_many_bytes
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.embed.cache import EmbeddingCache, default_cache_dir
from clipeval.embed.device_decode import decode_on_device, pillow_pixels
from clipeval.embed.options import EMBEDDING_VERSION, EmbedOptions
from clipeval.embed.stats import StageTimer
from clipeval.models.encoder import Encoder, resolve_device, resolve_precision
from clipeval.models.registry import load_encoder, weights_identity
from clipeval.progress import progress_bar

FAST_DECODE_FACTOR = 2  # the fast path keeps a decoded short side of at least this x the model's resize side


@dataclass
class Embeddings:
    """Embeddings of a list of inputs, each distinct usable input encoded once.

    Attributes:
        vectors: ``(U, D)`` float32 L2-normalised, one row per distinct usable input (``(0, 0)`` when none).
        rows: ``(N,)`` int64: each input's row in ``vectors``; -1 when it was skipped (``None``) or failed.
        errors: input position -> (status, reason) of the inputs that failed to decode or preprocess.
        truncated: captions only: whether the model truncated each input.
    """

    vectors: torch.Tensor
    rows: np.ndarray
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    truncated: np.ndarray | None = None

    def of(self, positions: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The embeddings of the inputs at ``positions`` (all of which must be usable)."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        if (rows < 0).any():
            raise ValueError("asked for the embedding of an input that has none")
        return self.vectors[torch.from_numpy(rows)]


def _stage(timer: StageTimer | None, name: str, items: int):
    return timer.stage(name, items=items) if timer is not None else contextlib.nullcontext()


def batches(n: int, size: int):
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def text_key(text: str) -> str:
    """A caption's content key: the SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_decode_processes(decode_processes: int | None, device: torch.device) -> int:
    """The number of decode processes: as given, or the device's default (see :class:`EmbedOptions`)."""
    if decode_processes is not None:
        if decode_processes < 0:
            raise ValueError(f"decode_processes must be 0 or more, got {decode_processes}")
        return decode_processes
    return min(8, cpu_cores() - 1) if device.type == "cuda" else 0


def resolve_encode_processes(encode_processes: int, device: torch.device) -> int:
    """The number of encode processes, checked against the device: they are a CPU layout."""
    if encode_processes and device.type != "cpu":
        raise ValueError(f"--encode-processes runs the model in forked CPU processes; on {device.type} use "
                         "--decode-processes (CPU processes decoding while the model encodes on the device)")
    return encode_processes


def decode_mode(options: EmbedOptions) -> str:
    """How a run decodes images, as its cache entries record it: ``exact``, ``fast`` or ``torchvision``."""
    return "torchvision" if options.decoder == "torchvision" else "fast" if options.fast_decode else "exact"


def model_key(encoder: Encoder, decode: str = "exact") -> tuple[str, dict]:
    """The cache's model key: a hash of everything the vectors depend on (the description, also returned)."""
    description = {"spec": encoder.spec, "weights_sha256": encoder.weights_digest(),
                   "preprocess": encoder.preprocess_id(),
                   "decode": f"draft>={FAST_DECODE_FACTOR}x{encoder.input_side()}" if decode == "fast" else decode,
                   "precision": encoder.precision, "device": encoder.device.type,
                   "context_length": encoder.context_length, "version": EMBEDDING_VERSION}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:40], description


def load_identity(spec: str, device: torch.device, precision: str, decode: str,
                  content: bool = False) -> str | None:
    """What decides a model key without loading the model (``None`` for hub checkpoints).

    By default from the weights files' stat fingerprints (nothing read); with ``content`` from
    their SHA-256 (:func:`clipeval.models.registry.weights_identity`).
    """
    identity = weights_identity(spec, content=content)
    if identity is None:
        return None
    settings = {"weights": identity, "device": device.type, "precision": precision, "decode": decode,
                "version": EMBEDDING_VERSION}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


class LazyEncoder:
    """A checkpoint that is loaded only when something has to be encoded (a warm cache loads nothing); with
    ``text_only``, by its family's lighter load for encoding texts only, where it has one."""

    def __init__(self, spec: str, options: EmbedOptions | None = None, timer: StageTimer | None = None,
                 text_only: bool = False):
        options = options or EmbedOptions()
        self.spec = spec
        self.text_only = text_only
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.timer = timer
        self.progress = options.progress
        self.encoder: Encoder | None = None

    def load(self) -> Encoder:
        """The model, loaded (and its ``model_load`` stage timed) on the first call."""
        if self.encoder is None:
            with _stage(self.timer, "model_load", 0):
                self.encoder = load_encoder(self.spec, str(self.device), self.precision, progress=self.progress,
                                            text_only=self.text_only)
        return self.encoder


# --- decoding and preprocessing (in worker processes or inline) -------------------------------------------------

_WORKER: dict = {}


def _init_worker(encoder: Encoder, min_side: int | None, max_pixels: int) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the run and shuts the pool; a worker's own
    # KeyboardInterrupt would only print its traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _WORKER.update(encoder=encoder, min_side=min_side, max_pixels=max_pixels)  # inherited by the fork, not pickled


def _decode_batch(datas: list[bytes], preprocess, min_side: int | None, max_pixels: int):
    """Decode and preprocess a batch; returns (stacked pixels of the ok ones or None, [(status, error)])."""
    pixels, outcomes = [], []
    for data in datas:
        tensor, outcome = pillow_pixels(data, preprocess, max_pixels, min_side)
        outcomes.append(outcome)
        if tensor is not None:
            pixels.append(tensor)
    return (torch.stack(pixels).numpy() if pixels else None), outcomes


def _decode_in_worker(datas: list[bytes]):
    return _decode_batch(datas, _WORKER["encoder"].preprocess, _WORKER["min_side"], _WORKER["max_pixels"])


def _encode_images_in_worker(datas: list[bytes]):
    """An encode process's batch: (vectors of the ok images or None, [(status, error)])."""
    pixels, outcomes = _decode_in_worker(datas)
    return (None if pixels is None else _WORKER["encoder"].encode_images(torch.from_numpy(pixels)).numpy()), outcomes


def _encode_texts_in_worker(texts: list[str]):
    """An encode process's batch of captions: (vectors, whether the model truncated each)."""
    encoder = _WORKER["encoder"]
    return encoder.encode_texts(texts).numpy(), encoder.truncated(texts)


class _Workers:
    """The per-batch work beside the model: decoding (in decode processes or inline, or on the model's device), or
    decoding and encoding both (in encode processes); a bounded number of batches ahead."""

    def __init__(self, encoder: Encoder, decode_processes: int, encode_processes: int, options: EmbedOptions):
        side = encoder.input_side()
        self.encoder, self.max_pixels = encoder, options.max_pixels
        self.processes, self.encoding = encode_processes or decode_processes, bool(encode_processes)
        self.min_side = FAST_DECODE_FACTOR * side if options.fast_decode and side else None
        self.on_device = options.decoder == "torchvision"
        self.pool: ProcessPoolExecutor | None = None

    def images(self, batches_of_bytes: Sequence[list[bytes]]
               ) -> Iterator[tuple[np.ndarray | torch.Tensor | None, list]]:
        """Per batch in order: (decoded pixels, or with encode processes the vectors, of its ok images; outcomes)."""
        if self.on_device:
            return (decode_on_device(datas, self.encoder, self.max_pixels) for datas in batches_of_bytes)
        if not self.processes:
            return (_decode_batch(datas, self.encoder.preprocess, self.min_side, self.max_pixels)
                    for datas in batches_of_bytes)
        return self._in_processes(_encode_images_in_worker if self.encoding else _decode_in_worker, batches_of_bytes)

    def texts(self, batches_of_texts: Sequence[list[str]]) -> Iterator[tuple[np.ndarray, list[bool]]]:
        """Per batch of captions in order, encoded in the encode processes: (vectors, truncated flags)."""
        return self._in_processes(_encode_texts_in_worker, batches_of_texts)

    def _in_processes(self, work, batches: Sequence[list]) -> Iterator:
        """The pool is started here, when the caller asks for the batches, outside any timed stage, so no stage's
        memory-sampling thread is running when the processes are forked."""
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("fork"),
                                            initializer=_init_worker,
                                            initargs=(self.encoder, self.min_side, self.max_pixels))
            self.pool.submit(int).result()  # fork the processes now (a fork-context pool starts them on first use)
        return self._ahead(work, batches)

    def _ahead(self, work, batches: Sequence[list]) -> Iterator:
        pool, pending, todo = self.pool, deque(), iter(batches)
        for batch in todo:
            pending.append(pool.submit(work, batch))
            if len(pending) >= 2 * self.processes:
                break
        while pending:
            yield pending.popleft().result()
            for batch in todo:
                pending.append(pool.submit(work, batch))
                break

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class Embedder:
    """One checkpoint's embedding pipeline: cache look-ups, decode or encode processes, batched encoding.

    A context manager, because it owns worker processes and sets torch's thread count while it lives. Given a
    :class:`LazyEncoder`, the model is loaded only when an input is not cached (or its model key is not yet
    known: a hub checkpoint, or a first run).
    """

    def __init__(self, encoder: Encoder | LazyEncoder, options: EmbedOptions | None = None,
                 timer: StageTimer | None = None):
        self.lazy = encoder if isinstance(encoder, LazyEncoder) else None
        self._encoder = None if self.lazy else encoder
        self.spec, self.device = encoder.spec, encoder.device
        self.options = options or EmbedOptions()
        self.timer = timer
        self.encode_processes = resolve_encode_processes(self.options.encode_processes, self.device)
        self.decode_processes = (0 if self.options.decoder == "torchvision" or self.encode_processes
                                 else resolve_decode_processes(self.options.decode_processes, self.device))
        self._workers: _Workers | None = None
        folder = (self.options.embedding_cache_dir or default_cache_dir()) if self.options.embedding_cache else None
        self.cache = EmbeddingCache(folder) if folder is not None else None
        self._key: str | None = None
        self._threads = None

    @property
    def encoder(self) -> Encoder:
        """The model (loaded now if it was lazy and not loaded yet)."""
        if self._encoder is None:
            self._encoder = self.lazy.load()
        return self._encoder

    @property
    def loaded(self) -> Encoder | None:
        """The model if it has been loaded, else ``None``."""
        return self._encoder

    @property
    def key(self) -> str | None:
        """The model key vectors are cached under (``None`` without a cache)."""
        if self.cache is None or self._key is not None:
            return self._key
        # a warm run finds the key by the weights files' stat fingerprint (nothing read); when that is new (a
        # checkpoint copied, touched or replaced in place) by their content hash; else the model is loaded
        settings = (self.spec, self.device, self.lazy.precision, decode_mode(self.options)) if self.lazy else None
        unknown = []  # the identities the cache does not know yet
        for content in (False, True):
            identity = load_identity(*settings, content=content) if settings else None
            if identity is None:
                break
            self._key = self.cache.model_for(identity)
            if self._key is not None:
                break
            unknown.append(identity)
        if self._key is None:
            self._key, description = model_key(self.encoder, decode_mode(self.options))
            self.cache.describe(self._key, description)
        for identity in unknown:
            self.cache.remember_model(identity, self._key)
        return self._key

    def identify(self) -> tuple[str, dict]:
        """The model key and what it stands for (:func:`model_key`); the model is not loaded when the cache knows
        them (a warm run)."""
        if self.key is not None:
            description = self.cache.description_of(self.key)
            if description is not None:
                return self.key, description
        return model_key(self.encoder, decode_mode(self.options))

    @property
    def workers(self) -> _Workers:
        if self._workers is None:
            self._workers = _Workers(self.encoder, self.decode_processes, self.encode_processes, self.options)
        return self._workers

    def __enter__(self) -> Embedder:
        if self.device.type == "cpu" and self.decode_processes:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(max(1, cpu_cores() - self.decode_processes))
        return self

    def __exit__(self, *exc) -> None:
        if self._workers is not None:
            self._workers.close()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        if self.cache is not None:
            self.cache.close()

    def cache_counts(self) -> dict[str, int] | None:
        """This run's cache hits and misses for images and texts (``None`` without a cache)."""
        if self.cache is None:
            return None
        empty = {"image_hits": 0, "image_misses": 0, "text_hits": 0, "text_misses": 0}
        return self.cache.counts.get(self._key, empty) if self._key else empty

    def _cached(self, kind: str, keys: list[str]) -> dict[str, tuple[np.ndarray, bool]]:
        if self.cache is None or not keys:
            return {}
        key = self.key
        with _stage(self.timer, "cache", len(keys)):
            return self.cache.get_flagged(key, kind, keys)

    def _store(self, kind: str, vectors: dict[str, np.ndarray], flags: dict[str, bool] | None = None) -> None:
        if self.cache is not None and vectors:
            with _stage(self.timer, "cache", len(vectors)):
                self.cache.put(self.key, kind, vectors, flags)

    def images(self, raws: Sequence[RawImage | None]) -> Embeddings:
        """Embed images from their bytes; equal bytes (equal digests) share one embedding.

        ``None`` or a non-ok :class:`RawImage` is skipped (its status is the caller's); inputs that fail to decode
        or preprocess are in the result's ``errors``. Misses are encoded in order of first appearance, so the
        same inputs always form the same batches.
        """
        usable = [raw if raw is not None and raw.status == "ok" else None for raw in raws]
        first: dict[str, bytes] = {}
        for raw in usable:
            if raw is not None:
                first.setdefault(raw.digest, raw.data)
        found = {key: vector for key, (vector, _) in self._cached("image", list(first)).items()}
        missing = [digest for digest in first if digest not in found]
        failed = self.cache.get_failures(self.key, missing) if self.cache is not None and missing else {}
        missing = [digest for digest in missing if digest not in failed]
        slices = list(batches(len(missing), self.options.batch_size))
        done = self.workers.images([[first[digest] for digest in missing[part]] for part in slices]) if slices else None
        waiting_for = "image_encode" if self.encode_processes else "image_decode"
        for part in slices:
            with _stage(self.timer, waiting_for, part.stop - part.start):
                produced, outcomes = next(done)
            ok = [digest for digest, (status, _) in zip(missing[part], outcomes) if status == "ok"]
            new_failures = {digest: outcome for digest, outcome in zip(missing[part], outcomes) if outcome[0] != "ok"}
            failed.update(new_failures)
            if self.cache is not None:
                self.cache.put_failures(self.key, new_failures)
            if not ok:
                continue
            vectors = produced if self.encode_processes else self._encode_pixels(produced, len(ok))
            new = dict(zip(ok, vectors))
            found.update(new)
            self._store("image", new)
        return _assemble([raw.digest if raw is not None else None for raw in usable], found, failed)

    def _encode_pixels(self, pixels: np.ndarray | torch.Tensor, images: int) -> np.ndarray:
        batch = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(pixels)
        if self.device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        with _stage(self.timer, "image_encode", images):
            return self.encoder.encode_images(batch).numpy()

    def texts(self, texts: Sequence[str | None]) -> Embeddings:
        """Embed captions; each distinct text once (the encoder tokenises and truncates)."""
        keys = [text_key(text) if text is not None else None for text in texts]
        first = dict(zip(keys, texts))
        first.pop(None, None)
        cached = self._cached("text", list(first))
        found = {key: vector for key, (vector, _) in cached.items()}
        truncated = {key: flag for key, (_, flag) in cached.items()}
        missing = [key for key in first if key not in found]
        parts = list(batches(len(missing), self.options.batch_size))
        texts_of = [[first[key] for key in missing[part]] for part in parts]
        encoded = (self.workers.texts(texts_of) if self.encode_processes and parts else
                   ((self.encoder.encode_texts(batch).numpy(), self.encoder.truncated(batch)) for batch in texts_of))
        for part, batch in zip(parts, texts_of):
            with _stage(self.timer, "text_encode", len(batch)):
                vectors, flags = next(encoded)
            new, flags = dict(zip(missing[part], vectors)), dict(zip(missing[part], flags))
            found.update(new)
            truncated.update(flags)
            self._store("text", new, flags)
        embedded = _assemble(keys, found, {})
        embedded.truncated = np.array([truncated.get(key, False) for key in keys], dtype=bool)
        return embedded


def _assemble(keys: list[str | None], found: dict[str, np.ndarray], failed: dict[str, tuple[str, str]]) -> Embeddings:
    """Embeddings with one row per distinct usable key, in order of first appearance."""
    index: dict[str, int] = {}
    for key in keys:
        if key is not None and key in found:
            index.setdefault(key, len(index))
    rows = np.array([index.get(key, -1) if key is not None else -1 for key in keys], dtype=np.int64)
    errors = {position: failed[key] for position, key in enumerate(keys) if key is not None and key in failed}
    if not index:
        return Embeddings(torch.empty((0, 0)), rows, errors)
    return Embeddings(torch.from_numpy(np.stack([found[key] for key in index])), rows, errors)


def encode_pixels(encoder: Encoder, pixels: torch.Tensor | Sequence[torch.Tensor],
                  batch_size: int = 32) -> torch.Tensor:
    """Encode already preprocessed images (``(N, C, H, W)`` or a sequence of ``(C, H, W)``) in batches: a
    training set's tensors. ``(0, 0)`` when there are none."""
    if not len(pixels):
        return torch.empty((0, 0))
    stack = isinstance(pixels, torch.Tensor)
    return torch.cat([encoder.encode_images(pixels[batch] if stack else torch.stack(list(pixels[batch])))
                      for batch in batches(len(pixels), batch_size)])


def embed_texts(encoder: Encoder, texts: Sequence[str | None], batch_size: int = 32) -> Embeddings:
    """Encode captions, each distinct text once, without a cache (a model being trained)."""
    with Embedder(encoder, EmbedOptions(batch_size=batch_size, embedding_cache=False, decode_processes=0)) as embedder:
        return embedder.texts(texts)


def prepare_pixels(refs: Sequence[str | Path], preprocess, base_dir: str | Path | None = None) -> torch.Tensor:
    """Read and preprocess images that must all be readable (a training set), stacked ``(N, C, H, W)``.

    Raises:
        ValueError: an image could not be read (the dataset folder is incomplete).
    """
    loaded = read_images([str(ref) for ref in refs], Path(base_dir) if base_dir else None)
    unreadable = [f"{ref} ({image.status})" for ref, image in zip(refs, loaded) if image.status != "ok"]
    if unreadable:
        raise ValueError(f"{len(unreadable)} images could not be read, e.g. {unreadable[:3]}; regenerate the data")
    return torch.stack([preprocess(image.image) for image in loaded])


@dataclass
class EmbeddedSet:
    """A retrieval set's embeddings under one checkpoint.

    Attributes:
        texts: ``(Q, D)``, in the order of the set's queries.
        images: ``(M, D)``, the usable images in collection order.
        image_positions: positions in ``RetrievalSet.images`` of those M images.
        image_status: per collection image: ``ok``, a read or decode failure code or ``preprocess_error``.
        image_error: per collection image: the reason (empty when ok).
        cache: cache hits and misses (``None`` without a cache).
    """

    texts: torch.Tensor
    images: torch.Tensor
    image_positions: np.ndarray
    image_status: list[str]
    image_error: list[str]
    queries_truncated: int = 0
    cache: dict | None = None


def _status_counts(statuses: list[str]) -> str:
    """``outside_root: 8, missing: 1``: how many images ended with each status, most first."""
    return ", ".join(f"{status}: {count}" for status, count in Counter(statuses).most_common())


def embed_set(encoder: Encoder | LazyEncoder, dataset: RetrievalSet, options: EmbedOptions | None = None,
              timer: StageTimer | None = None, block: int = 512) -> EmbeddedSet:
    """Embed every query and every usable image of a retrieval set.

    Images are read ``block`` at a time, so memory holds one block of image bytes, never the whole collection;
    those that cannot be read, decoded or preprocessed are left out with their status.

    Raises:
        ValueError: the set has images and none could be used (the message counts their statuses).
    """
    options = options or EmbedOptions()
    refs = dataset.images["image"].tolist()
    statuses, errors, vectors, positions = [], [], [], []
    with Embedder(encoder, options, timer) as embedder:
        for part in progress_bar(list(batches(len(refs), block)), desc=f"images {encoder.spec}",
                                 disable=not options.progress):
            with _stage(timer, "image_read", part.stop - part.start):
                raws = read_many_bytes(refs[part], dataset.base_dir, options.max_pixels, options.fetch)
            embedded = embedder.images(raws)
            for offset, raw in enumerate(raws):
                status, error = embedded.errors.get(offset, (raw.status, raw.error))
                statuses.append(status)
                errors.append(error)
            usable = np.flatnonzero(embedded.rows >= 0)
            if len(usable):
                vectors.append(embedded.of(usable))
                positions += (part.start + usable).tolist()
        if refs and not positions:
            raise ValueError(f"no image of {dataset.name} could be used ({_status_counts(statuses)}); the first: "
                             f"{errors[0]}")
        texts = embedder.texts(dataset.queries["text"].tolist())
        counts = embedder.cache_counts()
    images = torch.cat(vectors) if vectors else torch.empty((0, texts.vectors.shape[1]))
    return EmbeddedSet(texts.of(np.arange(len(dataset.queries))), images, np.asarray(positions, dtype=np.int64),
                       statuses, errors, int(texts.truncated.sum()), counts)
