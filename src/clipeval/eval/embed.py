"""The one read → preprocess → encode path: every embedding the project computes comes from here.

Scoring, retrieval, the scenes benchmark and the dual encoder's validation all call these
functions, so a preprocessing failure, a duplicate input or a stage timing is handled the same
way everywhere:

* each distinct image (by reference) and each distinct caption is preprocessed and encoded
  once, however many inputs share it;
* an image the model's transform rejects gets the status ``preprocess_error`` with the reason,
  never an exception (images that could not be read keep the status ``read_images`` gave them);
* with a :class:`~clipeval.eval.stats.StageTimer`, the ``image_preprocess``, ``image_encode``
  and ``text_encode`` stages are timed with their item counts;
* inputs are encoded in batches of ``batch_size`` in order of first appearance, so the same
  inputs always form the same batches (batch composition can move the last bit of a float).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from clipeval.data.fetch import FetchOptions
from clipeval.data.images import read_images
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.eval.stats import StageTimer
from clipeval.models.encoder import Encoder


@dataclass
class Embeddings:
    """Embeddings of a list of inputs, each distinct usable input encoded once.

    Attributes:
        vectors: ``(U, D)`` float32 L2-normalised rows, one per distinct usable input
            (``(0, 0)`` when none was usable).
        rows: ``(N,)`` int64: for each input, its row in ``vectors``; -1 when the input was
            skipped (``None``) or failed to preprocess.
        errors: input position -> reason, for inputs that failed to preprocess.
    """

    vectors: torch.Tensor
    rows: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

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


def encode_pixels(encoder: Encoder, pixels: torch.Tensor | Sequence[torch.Tensor],
                  batch_size: int = 32) -> torch.Tensor:
    """Encode preprocessed images in batches.

    Args:
        encoder: the model.
        pixels: ``(N, C, H, W)`` tensor, or a sequence of ``(C, H, W)`` tensors.
        batch_size: images per forward pass.

    Returns:
        ``(N, D)`` float32 L2-normalised embeddings (``(0, 0)`` when N is 0).
    """
    if not len(pixels):
        return torch.empty((0, 0))
    stack = isinstance(pixels, torch.Tensor)
    return torch.cat([encoder.encode_images(pixels[batch] if stack else torch.stack(list(pixels[batch])))
                      for batch in batches(len(pixels), batch_size)])


def embed_images(encoder: Encoder, images: Sequence[Image.Image | None], keys: Sequence[Hashable] | None = None,
                 batch_size: int = 32, timer: StageTimer | None = None) -> Embeddings:
    """Preprocess and encode decoded images; each distinct key once.

    Args:
        encoder: the model.
        images: RGB images; ``None`` for an input to skip (its status is the caller's).
        keys: identity of each image (e.g. its reference); inputs with equal keys share one
            embedding. Default: every input is distinct.
        batch_size: images per forward pass.
        timer: optional stage timer (``image_preprocess``, ``image_encode``).

    Returns:
        The :class:`Embeddings`; inputs the transform rejects are listed in ``errors``.
    """
    keys = list(range(len(images))) if keys is None else list(keys)
    first: dict[Hashable, int] = {}
    for position, image in enumerate(images):
        if image is not None:
            first.setdefault(keys[position], position)
    pixels: dict[Hashable, torch.Tensor] = {}
    failed: dict[Hashable, str] = {}
    with _stage(timer, "image_preprocess", len(first)):
        for key, position in first.items():
            try:
                pixels[key] = encoder.preprocess(images[position])
            except Exception as error:  # noqa: BLE001 - a model's transform can reject odd images
                failed[key] = f"{type(error).__name__}: {error}"
    index = {key: row for row, key in enumerate(pixels)}
    rows = np.array([index.get(key, -1) if image is not None else -1 for key, image in zip(keys, images)],
                    dtype=np.int64)
    errors = {position: failed[key] for position, (key, image) in enumerate(zip(keys, images))
              if image is not None and key in failed}
    if not pixels:
        return Embeddings(torch.empty((0, 0)), rows, errors)
    with _stage(timer, "image_encode", len(pixels)):
        vectors = encode_pixels(encoder, list(pixels.values()), batch_size)
    return Embeddings(vectors, rows, errors)


def embed_texts(encoder: Encoder, texts: Sequence[str | None], batch_size: int = 32,
                timer: StageTimer | None = None) -> Embeddings:
    """Encode captions; each distinct text once.

    Args:
        encoder: the model (it tokenises and truncates to its context).
        texts: captions; ``None`` for an input to skip.
        batch_size: captions per forward pass.
        timer: optional stage timer (``text_encode``).

    Returns:
        The :class:`Embeddings` (no text fails: any string is encoded).
    """
    index = {text: row for row, text in enumerate(dict.fromkeys(text for text in texts if text is not None))}
    rows = np.array([index[text] if text is not None else -1 for text in texts], dtype=np.int64)
    if not index:
        return Embeddings(torch.empty((0, 0)), rows)
    unique = list(index)
    with _stage(timer, "text_encode", len(unique)):
        vectors = torch.cat([encoder.encode_texts(unique[batch]) for batch in batches(len(unique), batch_size)])
    return Embeddings(vectors, rows)


def prepare_pixels(refs: Sequence[str | Path], preprocess: Callable[[Image.Image], torch.Tensor],
                   base_dir: str | Path | None = None, workers: int = 8) -> torch.Tensor:
    """Read and preprocess images that must all be readable (a training set), stacked ``(N, C, H, W)``.

    Raises:
        ValueError: an image could not be read (the dataset folder is incomplete).
    """
    loaded = read_images([str(ref) for ref in refs], Path(base_dir) if base_dir else None, workers=workers)
    unreadable = [f"{ref} ({image.status})" for ref, image in zip(refs, loaded) if image.status != "ok"]
    if unreadable:
        raise ValueError(f"{len(unreadable)} images could not be read, e.g. {unreadable[:3]}; regenerate the data")
    return torch.stack([preprocess(image.image) for image in loaded])


@dataclass
class EmbeddedSet:
    """A retrieval set's embeddings under one checkpoint.

    Attributes:
        texts: ``(Q, D)`` query embeddings, in the order of the set's queries.
        images: ``(M, D)`` embeddings of the usable images, in collection order.
        image_positions: positions in ``RetrievalSet.images`` of those M images.
        image_status: per collection image: ``ok``, a read failure code or ``preprocess_error``.
        image_error: per collection image: the reason (empty when ok).
    """

    texts: torch.Tensor
    images: torch.Tensor
    image_positions: np.ndarray
    image_status: list[str]
    image_error: list[str]


def embed_set(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 32, workers: int = 8,
              fetch_options: FetchOptions = FetchOptions(), progress: bool = True,
              timer: StageTimer | None = None) -> EmbeddedSet:
    """Embed every query and every usable image of a retrieval set.

    Images are read ``batch_size`` at a time (so memory holds one batch of decoded images);
    unreadable ones and ones the transform rejects are left out and given a status.

    Args:
        encoder: the model.
        dataset: queries, images and relevance.
        batch_size: images / queries per forward pass.
        workers: concurrent image reads / downloads.
        fetch_options: URL fetching options.
        progress: show a progress bar over the images.
        timer: optional stage timer (``image_read``, ``image_preprocess``, ``image_encode``,
            ``text_encode``).

    Returns:
        The :class:`EmbeddedSet`.
    """
    refs = dataset.images["image"].tolist()
    statuses, errors, vectors, positions = [], [], [], []
    for batch in tqdm(list(batches(len(refs), batch_size)), desc=f"images {encoder.name}", disable=not progress):
        with _stage(timer, "image_read", len(refs[batch])):
            loaded = read_images(refs[batch], dataset.base_dir, workers=workers, fetch_options=fetch_options)
        embedded = embed_images(encoder, [image.image for image in loaded], keys=refs[batch], batch_size=batch_size,
                                timer=timer)
        for offset, image in enumerate(loaded):
            status, error = image.status, image.error
            if offset in embedded.errors:
                status, error = "preprocess_error", embedded.errors[offset]
            statuses.append(status)
            errors.append(error)
        usable = np.flatnonzero(embedded.rows >= 0)
        if len(usable):
            vectors.append(embedded.of(usable))
            positions += (batch.start + usable).tolist()
    texts = embed_texts(encoder, dataset.queries["text"].tolist(), batch_size, timer)
    images = torch.cat(vectors) if vectors else torch.empty((0, texts.vectors.shape[1]))
    return EmbeddedSet(texts.of(np.arange(len(dataset.queries))), images, np.asarray(positions, dtype=np.int64),
                       statuses, errors)
