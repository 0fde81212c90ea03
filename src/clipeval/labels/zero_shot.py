"""Label images with a dual encoder used as a zero-shot classifier over a fixed vocabulary: CLIP's
``softmax(logit_scale * cos(image, text))``, the most probable ``top_k`` texts at or above ``threshold`` kept.

Images and texts go through the one embedding path, so they are cached like every other embedding. A
vocabulary the tokenizer cannot read is listed and warned about (docs/eval-sets.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from clipeval.data.images import read_many_bytes
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.eval.caveats import unknown_vocabulary_warnings
from clipeval.labels.base import LabelRun, empty_labels, image_table, run_stats
from clipeval.labels.classifier import labels_from_probabilities
from clipeval.models.encoder import Encoder

WORD = re.compile(r"[^\W\d_]+")  # a run of letters


def unknown_vocabulary(encoder: Encoder, vocabulary: Sequence[str]) -> dict[str, list[str]]:
    """Each vocabulary entry holding a word the encoder's tokenizer does not know, with those words.

    Empty when the tokenizer cannot be asked (:meth:`~clipeval.models.encoder.Encoder.unknown_words`).
    """
    words = list(dict.fromkeys(word for entry in vocabulary for word in WORD.findall(entry)))
    flags = encoder.unknown_words(words) if words else None
    unknown = {word for word, flag in zip(words, flags or []) if flag}
    found = {entry: [word for word in WORD.findall(entry) if word in unknown] for entry in vocabulary}
    return {entry: words for entry, words in found.items() if words}


class ZeroShot:
    """A checkpoint's zero-shot classification as a labeller; the ``vocabulary`` texts are the queries."""

    name = "zero-shot"

    def __init__(self, checkpoint: str, vocabulary: Sequence[str], threshold: float = 0.5, top_k: int = 1,
                 options: EmbedOptions = EmbedOptions()):
        if not vocabulary:
            raise ValueError("the zero-shot labeller needs a vocabulary")
        self.model, self.vocabulary, self.threshold, self.top_k = checkpoint, list(vocabulary), threshold, top_k
        self.options = replace(options, progress=False)

    def label(self, refs: list[str], base_dir: Path | None = None) -> LabelRun:
        """Label each readable image with its most probable vocabulary texts."""
        started = time.perf_counter()
        raws = read_many_bytes(list(refs), base_dir, fetch_options=self.options.fetch)
        with Embedder(LazyEncoder(self.model, self.options), self.options) as embedder:
            images = embedder.images(raws)
            texts = embedder.texts(self.vocabulary).of(range(len(self.vocabulary)))
            usable = np.flatnonzero(images.rows >= 0)
            scale = (embedder.encoder.logit_scale or 100.0) if len(usable) else 100.0  # CLIP's fixed 100 if none
            unknown = unknown_vocabulary(embedder.encoder, self.vocabulary)
        statuses, errors = zip(*(images.errors.get(i, (raw.status, raw.error)) for i, raw in enumerate(raws)))
        labels = empty_labels()
        if len(usable):
            probabilities = torch.softmax(scale * images.of(usable) @ texts.T, dim=1).numpy()
            kept = labels_from_probabilities([refs[i] for i in usable], probabilities, self.vocabulary,
                                             self.threshold, self.top_k)
            if len(kept):
                labels = kept.assign(labeller=self.name, model=self.model, threshold=self.threshold)
        table = image_table(list(refs), list(statuses), list(errors), labels)
        return LabelRun(labels.reset_index(drop=True), table,
                        run_stats(labels, table, labeller=self.name, model=self.model, threshold=self.threshold,
                                  top_k=self.top_k, vocabulary=len(self.vocabulary), vocabulary_unknown=unknown,
                                  warnings=[warning.record() for warning in
                                            unknown_vocabulary_warnings(self.model, self.vocabulary, unknown)],
                                  seconds=time.perf_counter() - started))

