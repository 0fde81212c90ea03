"""The scenes benchmark: what the captioned scenes tell about any encoder.

Retrieval metrics for all, seen and unseen-combination queries; matched vs mismatched cosine
over the whole caption x image matrix (with the ROC AUC); hard-negative accuracy (does the true
caption beat its swapped twin on the same image); and a training-like batch's similarity
matrix. Every embedding comes from :mod:`clipeval.embed.engine`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clipeval.data.retrieval_sets import RetrievalSet, relevance_matrix, retrieval_set_from_pairs
from clipeval.data.scenes import read_scenes_retrieval
from clipeval.data.sources import read_pairs
from clipeval.embed.engine import embed_set
from clipeval.embed.options import EmbedOptions
from clipeval.eval.hard_negatives import negative_accuracy_table, negative_outcomes
from clipeval.metrics.compare import roc_auc
from clipeval.metrics.retrieval import summarize
from clipeval.models.encoder import Encoder
from clipeval.paths import SCENES_DIR

KS = (1, 5, 10)


def embed_scenes(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed a set's queries and images; every scene image must be readable.

    Returns:
        ``(texts, images)``: L2-normalised embeddings in the order of ``dataset.queries`` and
        ``dataset.images``.

    Raises:
        ValueError: an image could not be read (the dataset folder is incomplete).
    """
    embedded = embed_set(encoder, dataset, EmbedOptions(batch_size=batch_size, progress=False))
    if len(embedded.image_positions) != len(dataset.images):
        unreadable = [status for status in embedded.image_status if status != "ok"]
        raise ValueError(f"{dataset.name}: {len(unreadable)} images could not be read ({unreadable[:3]}...); "
                         "regenerate the scenes")
    return embedded.texts, embedded.images


def score_retrieval(encoder: Encoder, dataset: RetrievalSet, batch_size: int = 256) -> np.ndarray:
    """Cosine scores ``(queries, images)`` of a retrieval set (float32, queries as rows)."""
    texts, images = embed_scenes(encoder, dataset, batch_size)
    return (texts @ images.T).numpy()


def summarize_retrieval(scores: np.ndarray, dataset: RetrievalSet) -> pd.DataFrame:
    """Text-to-image retrieval metrics for all queries, and seen vs unseen combinations.

    Args:
        scores: ``(queries, images)`` scores of ``dataset``.
        dataset: a scenes retrieval set (its queries carry ``seen_combination``).

    Returns:
        One row per query subset (``all``, ``seen``, ``unseen``) with the keys of
        :func:`clipeval.metrics.retrieval.summarize` as columns.
    """
    relevance = relevance_matrix(dataset)
    seen = dataset.queries["seen_combination"].to_numpy(dtype=bool)
    subsets = {"all": np.ones(len(scores), dtype=bool), "seen": seen, "unseen": ~seen}
    rows = {name: summarize(scores[keep], relevance[keep], KS) for name, keep in subsets.items() if keep.any()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("queries")


def summarize_match_scores(scores: np.ndarray, relevance: np.ndarray) -> dict[str, float]:
    """Cosine of matched (caption describes image) vs mismatched pairs over a whole score matrix.

    Returns:
        ``matched_mean``, ``mismatched_mean``, ``gap`` and ``auc`` (P(matched > mismatched)).
    """
    matched, mismatched = scores[relevance], scores[~relevance]
    return {"matched_mean": float(matched.mean()), "mismatched_mean": float(mismatched.mean()),
            "gap": float(matched.mean() - mismatched.mean()), "auc": roc_auc(matched, mismatched)}


def score_scene_pairs(encoder: Encoder, scenes_dir: str | Path, split: str, batch_size: int = 256) -> pd.DataFrame:
    """The split's pairs table (true captions and hard negatives) with a ``cosine`` column."""
    pairs = read_pairs(Path(scenes_dir) / f"pairs_{split}.csv")
    dataset = retrieval_set_from_pairs(pairs, f"scenes-{split}-pairs", distinct_captions=True)  # each text once
    texts, images = embed_scenes(encoder, dataset, batch_size)
    text_index = pd.Index(dataset.queries["text"]).get_indexer(pairs["caption"].astype(str))
    image_index = pd.Index(dataset.images["image"]).get_indexer(pairs["image"].astype(str))
    return pairs.assign(cosine=(texts[text_index] * images[image_index]).sum(dim=1).numpy())


def hard_negative_outcomes(scored: pd.DataFrame) -> pd.DataFrame:
    """The hard-negative rows of a scored pairs table, in order, with ``correct``: their true twin
    caption scores strictly higher on the same scene (:func:`clipeval.eval.hard_negatives.negative_outcomes`)."""
    return negative_outcomes(scored, image_column="scene_id")


def hard_negative_accuracy(scored: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """How often the true caption beats its swapped twin on the same image, the table every hard-negative set gets
    (:func:`clipeval.eval.hard_negatives.negative_accuracy_table`), for all, seen and unseen combinations.

    Args:
        scored: a pairs table with ``cosine`` (see :func:`score_scene_pairs`).
        n_resamples, seed: the bootstrap of the CIs.

    Returns:
        One row per negative kind and ``all``, for all rows and for seen / unseen combinations,
        columns ``negative_kind``, ``subset``, ``n``, ``accuracy`` (strictly greater cosine) with its
        ``ci_low`` and ``ci_high``, ``chance`` (0.5) and ``n_unscored``.
    """
    outcomes = hard_negative_outcomes(scored)
    seen = outcomes["seen_combination"].astype(bool)
    return negative_accuracy_table(outcomes, {"all": seen | ~seen, "seen": seen, "unseen": ~seen},
                                   mean_of_kinds=False, n_resamples=n_resamples, seed=seed)


def evaluate_scenes(encoder: Encoder, scenes_dir: str | Path = SCENES_DIR, split: str = "test",
                    batch_size: int = 256) -> dict:
    """Everything the scenes benchmark reports for one encoder on one split.

    Args:
        encoder: any encoder.
        scenes_dir: dataset folder.
        split: ``val`` or ``test``.
        batch_size: encoding batch size.

    Returns:
        ``retrieval`` (see :func:`summarize_retrieval`), ``match_scores`` (see
        :func:`summarize_match_scores`), ``hard_negatives`` (see :func:`hard_negative_accuracy`),
        the retrieval ``dataset`` and its ``scores`` matrix.
    """
    dataset = read_scenes_retrieval(scenes_dir, split)
    scores = score_retrieval(encoder, dataset, batch_size)
    return {"retrieval": summarize_retrieval(scores, dataset),
            "match_scores": summarize_match_scores(scores, relevance_matrix(dataset)),
            "hard_negatives": hard_negative_accuracy(score_scene_pairs(encoder, scenes_dir, split, batch_size)),
            "dataset": dataset, "scores": scores}


def similarity_batch(encoder: Encoder, dataset: RetrievalSet, n: int = 8, seed: int = 0
                     ) -> tuple[np.ndarray, list[str], list[Path], np.ndarray]:
    """A batch like the training ones: ``n`` random scenes and one true caption of each.

    Args:
        encoder: the model.
        dataset: a scenes retrieval set (e.g. the validation split).
        n: batch size.
        seed: sampling seed.

    Returns:
        ``(scores, captions, images, relevant)``: the ``(n, n)`` cosine matrix (captions x
        images; the diagonal pairs each caption with its own scene), the captions, the image
        paths, and the ``(n, n)`` boolean matrix of captions that truly describe each image.
    """
    rng = np.random.default_rng(seed)
    columns = rng.choice(len(dataset.images), size=n, replace=False)
    rows = [int(rng.choice(dataset.relevant[dataset.relevant[:, 1] == column, 0])) for column in columns]
    batch = RetrievalSet(dataset.name, dataset.queries.iloc[rows].reset_index(drop=True),
                         dataset.images.iloc[columns].reset_index(drop=True), np.empty((0, 2), int), dataset.base_dir)
    texts, images = embed_scenes(encoder, batch)
    paths = [Path(dataset.base_dir) / image for image in batch.images["image"]]
    relevant = relevance_matrix(dataset)[np.ix_(rows, columns)]
    return (texts @ images.T).numpy(), batch.queries["text"].tolist(), paths, relevant
