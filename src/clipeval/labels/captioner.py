"""Label images with an image-captioning model's captions (transformers), each caption becoming a query.

docs/eval-sets.md ("The labellers in detail") says which models load and how a caption's confidence is made.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from clipeval.data.images import read_images
from clipeval.embed.engine import batches
from clipeval.labels.base import LABEL_COLUMNS, LabelRun, empty_labels, image_table, run_stats
from clipeval.models.encoder import resolve_device
from clipeval.models.registry import CheckpointError, load_progress, local_folder, offline_error
from clipeval.progress import progress_bar

DEFAULT_MODEL = "nlpconnect/vit-gpt2-image-captioning"
DEFAULT_GENERATE_KWARGS = {"max_new_tokens": 30, "num_beams": 1}


def sequence_confidence(log_probs: torch.Tensor, tokens: torch.Tensor, end_ids: torch.Tensor) -> torch.Tensor:
    """The geometric-mean token probability of each generated sequence, ``(sequences,)`` in [0, 1].

    ``log_probs`` and ``tokens`` are ``(sequences, steps)``; tokens after a sequence's first end id (padding) do
    not count.
    """
    ended = torch.isin(tokens, end_ids).long()
    counted = (ended.cumsum(dim=1) - ended) == 0
    total = torch.where(counted, log_probs.float(), torch.zeros_like(log_probs, dtype=torch.float32)).sum(dim=1)
    return (total / counted.sum(dim=1)).exp()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


class Captioner:
    """An image-captioning model as a labeller.

    Args:
        generate_kwargs: settings passed to ``model.generate``; default :data:`DEFAULT_GENERATE_KWARGS`
            (greedy, at most 30 new tokens).
        min_confidence: the smallest caption confidence kept (0 keeps every non-empty caption).
        prompt: a text prompt given with every image (Florence-2's ``<CAPTION>``, BLIP's conditional
            captioning); needs a model with a processor class. The caption is what it generates after it.
    """

    name = "captioner"

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 8,
                 generate_kwargs: dict | None = None, min_confidence: float = 0.0, prompt: str | None = None,
                 progress: bool = True):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.model, self.device, self.batch_size = model, resolve_device(device), batch_size
        self.generate_kwargs = dict(DEFAULT_GENERATE_KWARGS if generate_kwargs is None else generate_kwargs)
        self.min_confidence, self.prompt, self.progress = min_confidence, prompt, progress
        self._network = self._processor = self._tokenizer = None

    def _load(self) -> None:
        folder = local_folder(self.model, self.model)
        local, target = folder is not None, folder or self.model
        try:
            with load_progress(self.progress):
                self._load_parts(target)
        except OSError as error:
            if local:
                raise CheckpointError(f"{self.model}: cannot load the saved model ({_first_line(error)})") from error
            raise offline_error(f"hf:{self.model}", error) from error
        except ValueError as error:  # e.g. a checkpoint that is not an image-to-text model
            raise CheckpointError(f"{self.model}: not an image-to-text model ({_first_line(error)})") from error

    def _load_parts(self, target: str) -> None:
        """The processor (or image processor and tokenizer) first: offline, it fails before any weight is read."""
        from transformers import (
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
            ProcessorMixin,
        )

        processor = AutoProcessor.from_pretrained(target)
        if isinstance(processor, ProcessorMixin):
            self._processor, self._tokenizer = processor, processor.tokenizer
        else:  # e.g. ViT-GPT2: an image processor and a tokenizer, no processor class tying them
            self._processor = AutoImageProcessor.from_pretrained(target)
            self._tokenizer = AutoTokenizer.from_pretrained(target)
        if self.prompt is not None and not hasattr(self._processor, "tokenizer"):
            raise CheckpointError(f"{self.model}: a prompt needs a model with a processor class (BLIP, Florence-2...)")
        self._network = AutoModelForImageTextToText.from_pretrained(target).to(self.device).eval()

    def _inputs(self, images: list[Image.Image]):
        if self.prompt is None:
            return self._processor(images=images, return_tensors="pt").to(self.device)
        return self._processor(images=images, text=[self.prompt] * len(images), return_tensors="pt").to(self.device)

    def caption(self, images: list[Image.Image]) -> list[list[tuple[str, float]]]:
        """Caption decoded RGB images in one ``generate`` call: per image its ``(caption, confidence)`` pairs, one
        per returned sequence, stripped, not yet filtered."""
        if self._network is None:
            self._load()
        with torch.inference_mode():
            output = self._network.generate(**self._inputs(images), output_logits=True, return_dict_in_generate=True,
                                            **self.generate_kwargs)
            log_probs = self._network.compute_transition_scores(output.sequences, output.logits,
                                                                getattr(output, "beam_indices", None),
                                                                normalize_logits=True)
        tokens = output.sequences[:, -log_probs.shape[1]:]  # the generated part, without start token or prompt
        end_ids = torch.tensor(self._network.generation_config.eos_token_id or [], device=tokens.device).flatten()
        confidences = sequence_confidence(log_probs, tokens, end_ids).tolist()
        texts = [text.strip() for text in self._tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        per_image = len(texts) // len(images)
        pairs = list(zip(texts, confidences))
        return [pairs[i * per_image:(i + 1) * per_image] for i in range(len(images))]

    def _kept(self, rows: list[dict]) -> pd.DataFrame:
        """The non-empty captions at or above ``min_confidence``, each (image, caption) once, as label rows."""
        labels = pd.DataFrame(rows, columns=["image", "text", "confidence"])
        labels = labels[(labels["text"] != "") & (labels["confidence"] >= self.min_confidence)]
        labels = labels.sort_values("confidence", ascending=False, kind="stable").drop_duplicates(["image", "text"])
        if not len(labels):
            return empty_labels()
        labels = labels.sort_index().assign(labeller=self.name, model=self.model, threshold=self.min_confidence)
        return labels[list(LABEL_COLUMNS)].reset_index(drop=True)

    def label(self, refs: list[str], base_dir: Path | None = None) -> LabelRun:
        """Caption each distinct readable image once; unreadable images keep their read status."""
        started = time.perf_counter()
        refs = list(refs)
        loaded = read_images(refs, base_dir)
        first = {}
        for position, (ref, image) in enumerate(zip(refs, loaded)):
            if image.status == "ok":
                first.setdefault(ref, position)
        readable = list(first)
        rows = []
        for part in progress_bar(list(batches(len(readable), self.batch_size)), desc=f"caption {self.model}",
                         disable=not self.progress):
            captions = self.caption([loaded[first[ref]].image for ref in readable[part]])
            rows += [{"image": ref, "text": text, "confidence": confidence}
                     for ref, pairs in zip(readable[part], captions) for text, confidence in pairs]
        labels = self._kept(rows)
        images = image_table(refs, [image.status for image in loaded], [image.error for image in loaded], labels)
        return LabelRun(labels, images, run_stats(labels, images, labeller=self.name, model=self.model,
                                                  device=str(self.device), batch_size=self.batch_size,
                                                  generate_kwargs=self.generate_kwargs,
                                                  min_confidence=self.min_confidence, prompt=self.prompt,
                                                  seconds=time.perf_counter() - started))
