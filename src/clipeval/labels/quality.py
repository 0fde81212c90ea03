"""How good are the pseudo-labels, where the truth is known, and how much do they bias a metric: precision,
recall, coverage and the metric bias against the true twin (docs/eval-sets.md, "What the labels are worth").

The truth is a ``judge(text, image) -> bool`` callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from clipeval.data.retrieval_sets import RetrievalSet, relevance_matrix

Judge = Callable[[str, str], bool]


def judged_relevance(texts: Sequence[str], images: Sequence[str], judge: Judge) -> np.ndarray:
    """``(texts, images)`` boolean matrix: ``judge(text, image)`` for every pair."""
    return np.array([[bool(judge(text, image)) for image in images] for text in texts], dtype=bool).reshape(
        len(texts), len(images))


def judged_set(pseudo: RetrievalSet, judge: Judge) -> RetrievalSet:
    """The same queries and images as ``pseudo``, with the relevance the judge decides."""
    truth = judged_relevance(pseudo.queries["text"].astype(str).tolist(), pseudo.images["image"].astype(str).tolist(),
                             judge)
    return RetrievalSet(f"{pseudo.name} (true relevance)", pseudo.queries, pseudo.images,
                        np.argwhere(truth).astype(np.int64), pseudo.base_dir)


def label_precision_recall(pseudo: RetrievalSet, truth: RetrievalSet) -> dict:
    """Pair-level precision and recall of the pseudo relevance against the truth (same queries and images).

    Returns:
        ``precision`` (NaN with no pseudo pair), ``recall`` (NaN with no true pair),
        ``pseudo_pairs``, ``true_pairs``, ``correct_pairs``, ``coverage`` (images with a
        pseudo-relevant query) and ``queries_with_a_true_image``.
    """
    if len(pseudo.queries) != len(truth.queries) or len(pseudo.images) != len(truth.images):
        raise ValueError("the pseudo and true sets must have the same queries and images")
    labelled, true = relevance_matrix(pseudo), relevance_matrix(truth)
    correct = int((labelled & true).sum())
    return {"precision": correct / labelled.sum() if labelled.sum() else float("nan"),
            "recall": correct / true.sum() if true.sum() else float("nan"),
            "pseudo_pairs": int(labelled.sum()), "true_pairs": int(true.sum()), "correct_pairs": correct,
            "coverage": float(labelled.any(axis=0).mean()) if labelled.shape[1] else float("nan"),
            "queries_with_a_true_image": int(true.any(axis=1).sum())}


def precision_recall_by_threshold(labels: pd.DataFrame, judge: Judge, images: Sequence[str],
                                  thresholds: Sequence[float]) -> pd.DataFrame:
    """The confidence threshold's trade-off: labels kept at each threshold, and their quality.

    ``labels`` are those kept at the lowest threshold of interest; ``images`` is the whole collection (recall
    counts true pairs over all of them). Recall is over the texts emitted at the lowest threshold, so that
    every row has the same denominator.
    """
    texts = list(dict.fromkeys(labels["text"].astype(str)))
    truth = judged_relevance(texts, list(images), judge)
    text_index, image_index = {t: i for i, t in enumerate(texts)}, {r: j for j, r in enumerate(images)}
    rows = []
    for threshold in thresholds:
        kept = labels[labels["confidence"] >= threshold]
        hits = [truth[text_index[str(t)], image_index[r]] for t, r in zip(kept["text"], kept["image"])]
        rows.append({"threshold": threshold, "labels": len(kept), "queries": kept["text"].nunique(),
                     "coverage": kept["image"].nunique() / len(images) if len(images) else float("nan"),
                     "precision": float(np.mean(hits)) if hits else float("nan"),
                     "recall": float(np.sum(hits)) / truth.sum() if truth.sum() else float("nan")})
    return pd.DataFrame(rows)


def metric_bias(pseudo_metrics: pd.DataFrame, true_metrics: pd.DataFrame,
                metrics: Sequence[str] = ("hit_rate", "recall", "mrr")) -> pd.DataFrame:
    """Each metric on the pseudo set, on the true set, and their difference (pseudo - true): one row per
    checkpoint x direction x k x metric, from the ``metrics.csv`` tables of the pseudo set and its judged twin."""
    keys = ["checkpoint", "direction", "k"]
    joined = pseudo_metrics.merge(true_metrics, on=keys, suffixes=("_pseudo", "_true"))
    rows = [{**{key: row[key] for key in keys}, "metric": metric, "pseudo": row[f"{metric}_pseudo"],
             "true": row[f"{metric}_true"], "bias": row[f"{metric}_pseudo"] - row[f"{metric}_true"]}
            for _, row in joined.iterrows() for metric in metrics]
    return pd.DataFrame(rows, columns=[*keys, "metric", "pseudo", "true", "bias"])
