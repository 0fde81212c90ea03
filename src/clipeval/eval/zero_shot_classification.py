"""Zero-shot classification of a checkpoint on a classification set, computed as CLIP_benchmark computes it.

**Class embeddings** (:func:`class_embeddings`): for each class, every template filled with the class name is
encoded through the embedding engine's text path (each prompt's vector L2-normalised, as the engine returns
it), the prompts' vectors are averaged and the mean is L2-normalised again: CLIP_benchmark's
``zero_shot_classifier``, open_clip's ``build_zero_shot_classifier``. Prompts go to the engine a block of
classes at a time, batched as every caption is. Each class vector is kept in the embedding cache under the
checkpoint's model key, keyed by the SHA-256 of its name and the whole template list
(:func:`class_embedding_key`), so it is computed once per checkpoint x class name x template set: a re-run
reads it (without loading the model when the cache knows the checkpoint), another template set computes its
own. (Class vectors are filed as the cache's ``text`` kind under a ``zero-shot-class:`` key, which no
caption's key can equal; their look-ups count in that kind's hits and misses.)

**Images** stream through :func:`clipeval.embed.engine.embed_set`, the read -> decode -> encode path of
retrieval (deduplicated, cached, path-confined, with per-image statuses). An image that cannot be used keeps
its row in the predictions with its status and is left out of the metrics, counted.

**Scores** are the cosine ``image @ class_embeddings.T`` (CLIP_benchmark scales it by 100, which changes no
ranking); ``torch.topk`` ranks the classes, as CLIP_benchmark's ``accuracy`` does.

**Outputs** (:class:`ZeroShotReport`): top-1 and top-5 accuracy and mean per-class recall, each with a bootstrap
CI over images and its chance level (:mod:`clipeval.metrics.classification`); per-class recall; the confusion
table; per-image predictions. Writing them is the caller's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from clipeval.data.classification_sets import IMAGE_COLUMN, LABEL_COLUMN, ClassificationSet
from clipeval.data.images import FailedCell
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.data.zero_shot_prompts import check_templates, fill_template
from clipeval.embed.engine import Embedder, LazyEncoder, embed_set
from clipeval.embed.options import EmbedOptions
from clipeval.embed.stats import StageTimer
from clipeval.metrics.bootstrap import bootstrap_ci
from clipeval.metrics.classification import (
    bootstrap_mean_per_group,
    confusion_table,
    per_class_table,
    top_k_chance,
    top_k_hits,
)
from clipeval.models.encoder import Encoder, resolve_device

CLASS_KEY_PREFIX = "zero-shot-class:"
TOP_K = 5
PROMPT_BLOCK = 8192  # prompts handed to the engine at once: bounds the prompt vectors held in memory
SCORE_BLOCK = 4096  # images scored against every class at once
METRIC_COLUMNS = ["checkpoint", "dataset", "metric", "k", "estimate", "ci_low", "ci_high", "chance", "trivial",
                  "n_images", "n_images_unusable", "n_classes", "n_classes_with_images", "n_templates",
                  "n_resamples", "confidence"]


@dataclass
class ClassEmbeddings:
    """One checkpoint's class embeddings for one list of class names and one template set.

    Attributes:
        vectors: ``(C, D)`` float32, L2-normalised, one row per class name in order.
        from_cache: distinct class names whose vector was read from the embedding cache.
        computed: distinct class names whose vector was computed now.
        truncated: distinct class names with at least one prompt the model truncated.
    """

    vectors: torch.Tensor
    from_cache: int
    computed: int
    truncated: int


@dataclass
class ZeroShotReport:
    """Everything a zero-shot classification run produces for one checkpoint and one set.

    Attributes:
        metrics: one row per metric (``top1_accuracy``, ``top5_accuracy``, ``mean_per_class_recall``):
            :data:`METRIC_COLUMNS`; ``estimate`` and its CI are fractions, ``chance`` the metric's value
            under a random ranking, ``trivial`` when ``k`` covers every class (top-5 of 4 classes is 1.0).
        predictions: one row per image of the set, in order, with the set's columns (``image`` as text,
            empty for bytes stored in the data), ``label_name``, ``status`` and ``error`` (``ok`` / a read
            or decode failure), ``predicted`` and ``predicted_name`` (top-1), ``correct_top1``,
            ``correct_top5``, and the ranked ``top_classes`` and their cosine ``top_scores`` (lists);
            NA where the image could not be used.
        per_class: per class, its images, top-1 hits, recall and how often it was predicted
            (:func:`clipeval.metrics.classification.per_class_table`); ``worst_classes`` ranks it.
        confusion: the non-zero cells of the confusion matrix
            (:func:`~clipeval.metrics.classification.confusion_table`).
        stats: counts (images, statuses, class vectors cached and computed, prompts), the embedding cache's hits,
            whether the model was loaded, and every stage's timing (``timing``).
    """

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    stats: dict = field(default_factory=dict)


def _stage(timer: StageTimer | None, name: str, items: int):
    return timer.stage(name, items=items) if timer is not None else contextlib.nullcontext()


def class_embedding_key(classname: str, templates: Sequence[str]) -> str:
    """A class vector's cache key: the SHA-256 of its name and its whole template list, in order."""
    content = json.dumps({"classname": classname, "templates": list(templates)}, ensure_ascii=False)
    return CLASS_KEY_PREFIX + hashlib.sha256(content.encode("utf-8")).hexdigest()


def class_embeddings(embedder: Embedder, classnames: Sequence[str], templates: Sequence[str],
                     timer: StageTimer | None = None) -> ClassEmbeddings:
    """The class embeddings of ``classnames`` under ``templates``: cached, or encoded through ``embedder``.

    Per class: its prompts (every template filled with its name), their L2-normalised vectors averaged,
    the mean L2-normalised. A name listed twice (ImageNet's two ``missile`` classes) is computed once.

    Raises:
        PairsTableError: a template without exactly one ``{c}`` / ``{}`` slot.
    """
    templates = check_templates(list(templates))
    keys = [class_embedding_key(name, templates) for name in classnames]
    first = dict(zip(keys, classnames))
    found: dict[str, np.ndarray] = {}
    flags: dict[str, bool] = {}
    if embedder.cache is not None:
        with _stage(timer, "cache", len(first)):
            for key, (vector, flag) in embedder.cache.get_flagged(embedder.key, "text", list(first)).items():
                found[key], flags[key] = vector, flag
    missing = [key for key in first if key not in found]
    per_block = max(1, PROMPT_BLOCK // len(templates))
    for start in range(0, len(missing), per_block):
        block = missing[start:start + per_block]
        prompts = [fill_template(template, first[key]) for key in block for template in templates]
        embedded = embedder.texts(prompts)
        vectors = embedded.of(np.arange(len(prompts))).reshape(len(block), len(templates), -1).mean(dim=1)
        vectors = vectors / vectors.norm(dim=-1, keepdim=True)
        new = dict(zip(block, vectors.numpy()))
        truncated = dict(zip(block, embedded.truncated.reshape(len(block), len(templates)).any(axis=1).tolist()))
        found.update(new)
        flags.update(truncated)
        if embedder.cache is not None:
            with _stage(timer, "cache", len(new)):
                embedder.cache.put(embedder.key, "text", new, truncated)
    vectors = torch.from_numpy(np.stack([found[key] for key in keys]).astype(np.float32, copy=False))
    return ClassEmbeddings(vectors, len(first) - len(missing), len(missing), sum(flags[key] for key in first))


def rank_classes(images: torch.Tensor, classes: torch.Tensor, k: int,
                 block: int = SCORE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``k`` best classes by cosine, best first, a block of images at a time.

    Returns:
        ``(top_classes, top_scores)``: ``(N, k)`` int64 class ids and their float32 cosines.
    """
    ids, scores = [], []
    for start in range(0, len(images), block):
        best = torch.topk(images[start:start + block] @ classes.T, k, dim=1, largest=True, sorted=True)
        ids.append(best.indices.numpy())
        scores.append(best.values.numpy())
    if not ids:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
    return np.concatenate(ids).astype(np.int64), np.concatenate(scores).astype(np.float32)


def zero_shot_classify(checkpoint: str | Encoder | LazyEncoder, dataset: ClassificationSet, templates: Sequence[str],
                       options: EmbedOptions | None = None, timer: StageTimer | None = None, n_resamples: int = 1000,
                       confidence: float = 0.95, seed: int = 0) -> ZeroShotReport:
    """Classify every image of ``dataset`` among its class names, zero-shot, and summarise.

    Args:
        checkpoint: a checkpoint spec (loaded lazily: not at all when everything is cached), a
            :class:`~clipeval.embed.engine.LazyEncoder` or a loaded encoder.
        dataset: the images, their labels and the class names.
        templates: the prompt templates (:mod:`clipeval.data.zero_shot_prompts`).
        options: the embedding pipeline's options (device, batch size, cache, reading).
        timer: times every stage (``model_load``, ``text_encode``, ``image_read``, ``image_decode``...); by
            default a new one, so that ``stats`` always says where the time went.
        n_resamples, confidence, seed: the bootstrap of every CI.

    Raises:
        PairsTableError: a malformed template.
        ValueError: no image of the set could be used (the message counts their statuses).
    """
    options = options or EmbedOptions()
    timer = timer if timer is not None else StageTimer(resolve_device(options.device))
    templates = check_templates(list(templates))
    encoder = LazyEncoder(checkpoint, options, timer) if isinstance(checkpoint, str) else checkpoint
    with Embedder(encoder, options, timer) as embedder:
        classes = class_embeddings(embedder, dataset.classnames, templates, timer)
        class_cache = embedder.cache_counts()
    collection = RetrievalSet(dataset.name, pd.DataFrame({"text": pd.Series(dtype=object)}),
                              dataset.images[[IMAGE_COLUMN]], np.empty((0, 2), dtype=np.int64), dataset.base_dir)
    embedded = embed_set(encoder, collection, options, timer)
    k = min(TOP_K, len(dataset.classnames))
    with _stage(timer, "score", len(embedded.image_positions)):
        top_classes, top_scores = rank_classes(embedded.images, classes.vectors, k)
    labels = dataset.images[LABEL_COLUMN].to_numpy()
    used = labels[embedded.image_positions]
    metrics = _metric_rows(encoder.spec, dataset, used, top_classes, len(templates), n_resamples, confidence, seed)
    per_class = per_class_table(used, top_classes[:, 0], dataset.classnames)
    stats = {"checkpoint": encoder.spec, "dataset": dataset.name, "source": dataset.source,
             "n_images": len(labels), "n_images_used": len(used),
             "status_counts": dict(Counter(embedded.image_status).most_common()),
             "n_classes": len(dataset.classnames), "n_templates": len(templates),
             "prompts": len(dataset.classnames) * len(templates), "class_vectors_from_cache": classes.from_cache,
             "class_vectors_computed": classes.computed, "classes_with_truncated_prompts": classes.truncated,
             "cache": {"classes": class_cache, "images": embedded.cache},
             "model_loaded": (encoder.encoder is not None) if isinstance(encoder, LazyEncoder) else True,
             "timing": timer.summary()}
    return ZeroShotReport(metrics, _predictions(dataset, embedded, top_classes, top_scores), per_class,
                          confusion_table(used, top_classes[:, 0], dataset.classnames), stats)


def _metric_rows(spec: str, dataset: ClassificationSet, labels: np.ndarray, top_classes: np.ndarray,
                 n_templates: int, n_resamples: int, confidence: float, seed: int) -> pd.DataFrame:
    n_classes = len(dataset.classnames)
    hits = {k: top_k_hits(top_classes, labels, min(k, n_classes)) for k in (1, TOP_K)}
    intervals = {"top1_accuracy": (1, bootstrap_ci(hits[1], n_resamples=n_resamples, confidence=confidence,
                                                   seed=seed), top_k_chance(n_classes, 1)),
                 "top5_accuracy": (TOP_K, bootstrap_ci(hits[TOP_K], n_resamples=n_resamples, confidence=confidence,
                                                       seed=seed), top_k_chance(n_classes, TOP_K)),
                 "mean_per_class_recall": (1, bootstrap_mean_per_group(labels, hits[1], n_resamples, confidence,
                                                                       seed), 1 / n_classes)}
    rows = [{"checkpoint": spec, "dataset": dataset.name, "metric": metric, "k": k, "estimate": interval.estimate,
             "ci_low": interval.low, "ci_high": interval.high, "chance": chance, "trivial": k >= n_classes,
             "n_images": len(labels), "n_images_unusable": len(dataset.images) - len(labels), "n_classes": n_classes,
             "n_classes_with_images": len(np.unique(labels)), "n_templates": n_templates,
             "n_resamples": n_resamples, "confidence": confidence}
            for metric, (k, interval, chance) in intervals.items()]
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def _predictions(dataset: ClassificationSet, embedded, top_classes: np.ndarray, top_scores: np.ndarray) -> pd.DataFrame:
    """One row per image of the set: its columns, status and ranked classes (NA where it could not be used)."""
    table = dataset.images.copy()
    table[IMAGE_COLUMN] = [ref if isinstance(ref, str) else str(ref) if isinstance(ref, FailedCell) else ""
                           for ref in table[IMAGE_COLUMN]]
    names = np.asarray(dataset.classnames, dtype=object)
    labels = table[LABEL_COLUMN].to_numpy()
    table["label_name"] = names[labels]
    table["status"], table["error"] = embedded.image_status, embedded.image_error
    positions, unusable = embedded.image_positions, np.ones(len(table), dtype=bool)
    unusable[positions] = False
    predicted = np.zeros(len(table), dtype=np.int64)
    predicted[positions] = top_classes[:, 0]
    table["predicted"] = pd.array(predicted, dtype="Int64")
    table["predicted_name"] = pd.Series(names[predicted], dtype=object)
    for k in (1, TOP_K):
        hits = np.zeros(len(table), dtype=bool)
        hits[positions] = top_k_hits(top_classes, labels[positions], min(k, len(names)))
        table[f"correct_top{k}"] = pd.array(hits, dtype="boolean")
    table.loc[unusable, ["predicted", "predicted_name", "correct_top1", f"correct_top{TOP_K}"]] = pd.NA
    top_lists, score_lists = [None] * len(table), [None] * len(table)
    for row, position in enumerate(positions):
        top_lists[position], score_lists[position] = top_classes[row].tolist(), top_scores[row].tolist()
    table["top_classes"], table["top_scores"] = top_lists, score_lists
    return table
