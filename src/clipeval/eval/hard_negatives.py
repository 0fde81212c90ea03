"""Hard-negative accuracy: does an image's true caption score above the hard negative made from it?

Any scored pairs table works the same way: the synthetic scenes' (``colour``, ``relation``, ``count``),
SugarCrepe's (:func:`clipeval.data.sugarcrepe.read_sugarcrepe`: ``replace-object``... seven categories) or a
user's own. Its columns:

- ``image`` and ``caption``; ``match`` (True for a true caption);
- ``negative_kind``: a hard negative's category (empty on true captions);
- ``twin_caption`` (optional): the true caption a negative was made from, on the same image; without it,
  a negative is compared with its image's one true caption;
- a score column (``cosine``: :func:`score_hard_negative_pairs` scores a table through the pair scorer) and,
  optionally, ``status`` (``ok`` or why the row could not be scored).

A hard negative is **correct** when ``score(image, true caption) > score(image, negative)``, strictly (a tie
counts wrong): SugarCrepe's ``main_eval.py`` rule. Chance is 0.5: a model that cannot tell them apart picks
either. A negative whose image or captions could not be scored keeps its row with a status (its own, its true
caption's, ``no_true_caption``, ``ambiguous_true_caption``) and is counted apart, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from clipeval.embed.options import EmbedOptions
from clipeval.eval.scoring import ChunkScorer
from clipeval.metrics.bootstrap import bootstrap_ci
from clipeval.metrics.classification import bootstrap_mean_per_group

CHANCE = 0.5
ALL = "all"
MEAN_OF_KINDS = "mean"  # the row averaging the kinds' accuracies (SugarCrepe's headline number)
TABLE_COLUMNS = ["negative_kind", "subset", "n", "n_unscored", "accuracy", "ci_low", "ci_high", "chance"]


def score_hard_negative_pairs(checkpoint: str, pairs: pd.DataFrame, options: EmbedOptions | None = None,
                              image_column: str = "image", caption_column: str = "caption",
                              chunk_size: int = 1024) -> pd.DataFrame:
    """The pairs table with ``cosine``, ``status`` and ``error`` under one checkpoint, scored by the pair scorer
    (:class:`clipeval.eval.scoring.ChunkScorer`: each distinct image and caption embedded once, per-row statuses).

    Image paths are resolved against (and confined to) ``pairs.attrs["base_dir"]``. A ``status`` / ``error``
    the table already has is replaced by the scorer's, which finds the same unreadable images and more.
    """
    options = options or EmbedOptions(progress=False)
    parts = []
    with ChunkScorer([checkpoint], options, image_column, caption_column) as scorer:
        scorer.base_dir = pairs.attrs.get("base_dir")
        for start in range(0, len(pairs), chunk_size):
            parts.append(scorer.score_chunk(pairs.iloc[start:start + chunk_size]))
    scores = pd.concat(parts).set_index("row_id")[["cosine", "status", "error"]]
    scored = pairs.drop(columns=["cosine", "status", "error"], errors="ignore").join(scores)
    scored.attrs = dict(pairs.attrs)
    return scored


def negative_outcomes(scored: pd.DataFrame, score_column: str = "cosine", image_column: str = "image",
                      caption_column: str = "caption") -> pd.DataFrame:
    """The hard-negative rows of a scored pairs table, in order, each against its true caption on the same image.

    Returns:
        The negative rows (``match`` False with a ``negative_kind``) with ``true_caption``, ``true_score``,
        ``negative_score``, ``outcome`` (``ok``, or why the pair could not be compared: the negative's or the
        true caption's row status, ``no_true_caption``, ``ambiguous_true_caption`` when its image has several
        true captions and the row names no ``twin_caption``) and ``correct`` (boolean, NA unless ``ok``).

    Raises:
        ValueError: a column is missing.
    """
    needed = [image_column, caption_column, "match", "negative_kind", score_column]
    missing = [column for column in needed if column not in scored]
    if missing:
        raise ValueError(f"the scored pairs lack column(s) {missing}; a hard-negative table needs {needed}")
    status = scored["status"].fillna("").astype(str) if "status" in scored else pd.Series("ok", index=scored.index)
    matched = scored["match"].astype(bool)
    negatives = scored[~matched & scored["negative_kind"].fillna("").astype(str).ne("")].copy()
    # each (image, true caption) once: SugarCrepe repeats a COCO caption across items, with one score
    true_rows = scored[matched].assign(_status=status[matched]).drop_duplicates([image_column, caption_column])
    true_per_image = true_rows.groupby(image_column, sort=False)[caption_column]
    twins = (negatives["twin_caption"].fillna("").astype(str) if "twin_caption" in negatives
             else pd.Series("", index=negatives.index))
    only_true = true_per_image.first().where(true_per_image.size() == 1)
    negatives["true_caption"] = twins.where(twins.ne(""), negatives[image_column].map(only_true))
    found = true_rows.set_index([image_column, caption_column]).reindex(
        pd.MultiIndex.from_arrays([negatives[image_column], negatives["true_caption"]]))
    negatives["true_score"] = found[score_column].to_numpy(dtype=float)
    negatives["negative_score"] = negatives[score_column].astype(float)
    several = negatives[image_column].map(true_per_image.size()).fillna(0).to_numpy() > 1
    own, theirs = status[negatives.index].to_numpy(), found["_status"].to_numpy()
    negatives["outcome"] = np.select(
        [own != "ok", negatives["true_caption"].isna().to_numpy() & several, pd.isna(theirs), theirs != "ok"],
        [own, "ambiguous_true_caption", "no_true_caption", theirs], "ok")
    correct = pd.array(negatives["true_score"].to_numpy() > negatives["negative_score"].to_numpy(), dtype="boolean")
    correct[negatives["outcome"].to_numpy() != "ok"] = pd.NA
    negatives["correct"] = correct
    return negatives


def negative_accuracy_table(outcomes: pd.DataFrame, subsets: Mapping[str, pd.Series] | None = None,
                            mean_of_kinds: bool = True, n_resamples: int = 1000, confidence: float = 0.95,
                            seed: int = 0) -> pd.DataFrame:
    """Hard-negative accuracy per kind, pooled over kinds (``all``) and averaged over them (``mean``).

    Args:
        outcomes: :func:`negative_outcomes`.
        subsets: named boolean masks over ``outcomes`` (the scenes' ``seen`` / ``unseen`` combinations);
            default: one subset, ``all``.
        mean_of_kinds: add the ``mean`` row: each kind's accuracy averaged, so a large kind weighs no more
            than a small one (SugarCrepe's headline number), with its bootstrap CI.
        n_resamples, confidence, seed: the bootstrap of every CI (over hard negatives).

    Returns:
        One row per kind (``all`` first, the kinds sorted, then ``mean``) and subset: :data:`TABLE_COLUMNS`;
        ``n`` the negatives compared, ``n_unscored`` those that could not be, ``accuracy`` with its CI and
        ``chance`` (0.5). A kind or subset without any compared negative has no row.
    """
    subsets = subsets or {ALL: pd.Series(True, index=outcomes.index)}
    scored = outcomes["outcome"].eq("ok")
    rows = []
    kinds = [(ALL, outcomes.index)] + [(kind, group.index) for kind, group in
                                       outcomes.groupby("negative_kind", sort=True)]
    for subset, mask in subsets.items():
        for kind, index in kinds:
            part = outcomes.loc[index][mask[index].to_numpy(bool)]
            compared = part[scored[part.index]]
            if len(compared):
                interval = bootstrap_ci(compared["correct"].to_numpy(float), n_resamples=n_resamples,
                                        confidence=confidence, seed=seed)
                rows.append(_row(kind, subset, interval, len(part) - len(compared)))
        if mean_of_kinds and len(kinds) > 2:
            part = outcomes[mask.to_numpy(bool) & scored.to_numpy()]
            if len(part):
                codes, _ = pd.factorize(part["negative_kind"], sort=True)
                interval = bootstrap_mean_per_group(codes, part["correct"].to_numpy(bool), n_resamples,
                                                    confidence, seed)
                rows.append(_row(MEAN_OF_KINDS, subset, interval, int((mask & ~scored).sum())))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _row(kind: str, subset: str, interval, n_unscored: int) -> dict:
    return {"negative_kind": kind, "subset": subset, "n": interval.n, "n_unscored": n_unscored,
            "accuracy": interval.estimate, "ci_low": interval.low, "ci_high": interval.high, "chance": CHANCE}
