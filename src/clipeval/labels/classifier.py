"""Label images with an image classifier's confident classes (timm), class names becoming queries.

The original pseudo-labelling recipe: an ImageNet classifier over every image, a label kept only when the
classifier is confident; each kept class name is a query relevant to every image with that label.
docs/eval-sets.md ("The labellers in detail") says which models load and how multi-label folders work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipeval.data.images import read_images
from clipeval.embed.engine import batches
from clipeval.labels.base import LabelRun, empty_labels, image_table, run_stats
from clipeval.models.encoder import resolve_device
from clipeval.models.registry import CheckpointError, offline_error
from clipeval.progress import progress_bar

DEFAULT_MODEL = "tf_efficientnet_b4.ns_jft_in1k"
DEFAULT_THRESHOLD = 0.85


def readable_names(descriptions: list[str]) -> list[str]:
    """The query text of each class: its first synonym (``"tabby, tabby cat"`` -> ``"tabby"``), with ``_`` as spaces."""
    return [description.split(",")[0].strip().replace("_", " ") for description in descriptions]


def labels_from_probabilities(refs: list[str], probabilities: np.ndarray, names: list[str], threshold: float,
                              top_k: int = 1, multi_label: bool = False) -> pd.DataFrame:
    """Keep each image's confident classes; one row per (image, query text).

    Equal ``names`` are one query (merged synonyms, whose confidence is the largest of their probabilities).
    Exclusive classes look at the ``top_k`` most probable only; with ``multi_label`` every class at or above
    ``threshold`` is kept. Rows are ordered by image, then decreasing confidence.
    """
    rows = []
    for ref, row in zip(refs, probabilities):
        candidates = np.argsort(-row, kind="stable")
        if not multi_label:
            candidates = candidates[:top_k]
        best: dict[str, float] = {}
        for index in candidates:
            if row[index] >= threshold and row[index] > best.get(names[index], -1.0):
                best[names[index]] = float(row[index])
        rows += [{"image": ref, "text": text, "confidence": confidence} for text, confidence in best.items()]
    return pd.DataFrame(rows, columns=["image", "text", "confidence"])


class Classifier:
    """A timm classifier as a labeller: a timm model name or a local folder in timm's Hugging Face layout;
    ``top_k``: how many of an exclusive classifier's most probable classes may become labels."""

    name = "classifier"

    def __init__(self, model: str = DEFAULT_MODEL, threshold: float = DEFAULT_THRESHOLD, top_k: int = 1,
                 device: str = "auto", batch_size: int = 16, progress: bool = True):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.model, self.threshold, self.top_k = model, threshold, top_k
        self.device, self.batch_size, self.progress = resolve_device(device), batch_size, progress
        self._network = self._transform = None
        self.names: list[str] = []
        self.multi_label = False

    def _load(self) -> None:
        import timm

        folder = Path(self.model).expanduser()
        local = folder.is_dir()
        if local and not (folder / "config.json").is_file():
            raise CheckpointError(f"{self.model}: expected a timm folder with config.json and weights")
        try:
            network = timm.create_model(f"local-dir:{folder}" if local else self.model, pretrained=True)
        except RuntimeError as error:  # an unknown architecture
            raise CheckpointError(f"{self.model}: {str(error).splitlines()[0]}") from error
        except OSError as error:  # no hub / no network
            raise offline_error(f"timm:{self.model}", error) from error
        config = json.loads((folder / "config.json").read_text()) if local else {}
        self.multi_label = bool(config.get("multi_label", False))
        descriptions = network.pretrained_cfg.get("label_names")
        if descriptions is None:
            from timm.data import ImageNetInfo

            info = ImageNetInfo()
            descriptions = [info.index_to_description(i) for i in range(network.num_classes)]
        self.names = readable_names(list(descriptions))
        self._network = network.to(self.device).eval()
        self._transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=network))

    def probabilities(self, images) -> np.ndarray:
        """Class probabilities of decoded RGB images, ``(images, classes)``."""
        if self._network is None:
            self._load()
        with torch.inference_mode():
            logits = self._network(torch.stack([self._transform(image) for image in images]).to(self.device))
        scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return scores.float().cpu().numpy()

    def label(self, refs: list[str], base_dir: Path | None = None) -> LabelRun:
        """Label each readable image with its confident classes (see :func:`labels_from_probabilities`)."""
        started = time.perf_counter()
        loaded = read_images(list(refs), base_dir)
        readable = [i for i, image in enumerate(loaded) if image.status == "ok"]
        parts = []
        for part in progress_bar(list(batches(len(readable), self.batch_size)), desc=f"classify {self.model}",
                         disable=not self.progress):
            positions = readable[part]
            probabilities = self.probabilities([loaded[i].image for i in positions])
            parts.append(labels_from_probabilities([refs[i] for i in positions], probabilities, self.names,
                                                   self.threshold, self.top_k, self.multi_label))
        labels = pd.concat(parts, ignore_index=True) if parts else empty_labels()[["image", "text", "confidence"]]
        labels = labels.assign(labeller=self.name, model=self.model, threshold=self.threshold)
        labels = labels if len(labels) else empty_labels()
        images = image_table(list(refs), [image.status for image in loaded], [image.error for image in loaded], labels)
        return LabelRun(labels, images, run_stats(labels, images, labeller=self.name, model=self.model,
                                                  threshold=self.threshold, top_k=self.top_k,
                                                  multi_label=self.multi_label, seconds=time.perf_counter() - started))
