"""Checks that find results which look fine but are not: each returns :class:`~clipeval.warn.RunWarning` values.

The thresholds are named here, once, and documented in docs/scoring.md, docs/retrieval.md and
docs/eval-sets.md:

- :data:`TRUNCATION_SHARE`: a checkpoint that truncates more than this share of the captions it
  scores (or of a retrieval set's queries) to its context length is warned about;
- :data:`UNKNOWN_VOCABULARY_SHARE`: a zero-shot labeller whose tokenizer does not know a word of
  more than this share of its vocabulary entries;
- circular evaluation: a checkpoint evaluated on an eval set whose labels it produced (any);
- trivial metrics: HitRate@k and Recall@k with ``k`` at least the number of candidates ranked
  (1.0 whatever the model);
- hubs: :func:`clipeval.eval.retrieval.hub_items`' thresholds, at most :data:`HUBS_LISTED` a
  checkpoint and direction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from clipeval.models.registry import CheckpointError, is_local_path, parse_spec
from clipeval.warn import RunWarning

TRUNCATION_SHARE = 0.10
UNKNOWN_VOCABULARY_SHARE = 0.10
HUBS_LISTED = 3
EXAMPLES = 5  # unknown vocabulary entries named in a warning


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.01 else f"{100 * share:.2g}%"


def truncation_warnings(counts: Iterable[tuple[str, int, int, int | None]], what: str = "captions",
                        column: str = "caption_truncated") -> list[RunWarning]:
    """Checkpoints that truncate more than :data:`TRUNCATION_SHARE` of the texts they encoded.

    Args:
        counts: per checkpoint ``(spec, truncated, encoded, context_length)``.
        what: what the texts are, in the message (``captions``, ``queries``).
        column: where the counts or per-text flags are, in the message.
    """
    warnings = []
    for spec, truncated, total, context in counts:
        if total and truncated / total > TRUNCATION_SHARE:
            warnings.append(RunWarning("truncation", (
                f"{spec} truncated {truncated} of {total} {what} ({_percent(truncated / total)}, more than "
                f"{_percent(TRUNCATION_SHARE)}) to its {f'{context}-token ' if context else ''}context: their "
                f"embeddings read only the first tokens ({column})"), spec))
    return warnings


def trivial_metric_warnings(metrics: pd.DataFrame) -> list[RunWarning]:
    """HitRate@k and Recall@k rows of ``metrics.csv`` whose ``k`` covers every candidate (``trivial``)."""
    warnings = []
    trivial = metrics[metrics["trivial"]] if len(metrics) else metrics
    for (dataset, direction), rows in trivial.groupby(["dataset", "direction"], sort=False):
        ks = ", @".join(str(k) for k in dict.fromkeys(rows["k"]))
        n = int(rows["n_candidates"].min())
        warnings.append(RunWarning("trivial_metric", (
            f"{dataset} {direction}: HitRate@{ks} and Recall@{ks} rank all {n} candidates (k >= {n}), so they are "
            f"1.0 by construction, whatever the model; marked trivial in metrics.csv")))
    return warnings


def hub_warnings(hubs: pd.DataFrame) -> list[RunWarning]:
    """The hubs of :func:`clipeval.eval.retrieval.hub_items`, at most :data:`HUBS_LISTED` a checkpoint and direction."""
    warnings = []
    for (spec, direction), rows in hubs.groupby(["checkpoint", "direction"], sort=False):
        for hub in rows.head(HUBS_LISTED).itertuples():
            queries = round(hub.top1_queries / hub.top1_share)
            warnings.append(RunWarning("hub", (
                f"{spec} {direction}: {hub.name!r} (item {hub.item}) is the top-1 result of {hub.top1_queries} of "
                f"{queries} queries ({_percent(hub.top1_share)}; a fair share is {_percent(hub.fair_share)}); a hub "
                "inflates HitRate@1 without telling the queries apart"), spec))
        if len(rows) > HUBS_LISTED:
            warnings.append(RunWarning("hub", f"{spec} {direction}: and {len(rows) - HUBS_LISTED} more hub(s) "
                                              "(retrieval_stats.json, hubs)", spec))
    return warnings


def same_checkpoint(a: str, b: str) -> bool:
    """Whether two specs name the same checkpoint: equal prefixes and targets, local paths resolved."""
    try:
        first, second = parse_spec(str(a)), parse_spec(str(b))
    except CheckpointError:
        return str(a).strip() == str(b).strip()

    def target(spec) -> str:
        head, at, tail = spec.target.rpartition("@")
        if at and is_local_path(tail):  # open_clip:ARCH@/path/weights.pt
            return f"{head}@{Path(tail).expanduser().resolve()}"
        return str(Path(spec.target).expanduser().resolve()) if is_local_path(spec.target) else spec.target

    return first.prefix == second.prefix and target(first) == target(second)


def circular_warnings(queries: pd.DataFrame, checkpoints: Sequence[str], dataset: str) -> list[RunWarning]:
    """Checkpoints evaluated on an eval set whose labels they produced (its queries' ``model`` column)."""
    if "model" not in queries:
        return []
    labellers = queries.dropna(subset=["model"]).drop_duplicates("model")
    warnings = []
    for spec in checkpoints:
        for row in labellers.itertuples():
            if same_checkpoint(spec, row.model):
                labeller = getattr(row, "labeller", "a")
                warnings.append(RunWarning("circular_evaluation", (
                    f"{spec} is evaluated on {dataset}, whose labels it produced ({labeller} labeller {row.model}): "
                    "its metrics measure agreement with itself, not retrieval quality (image_to_text HitRate@1 "
                    "is near 1.0 by construction)"), spec))
                break
    return warnings


def unknown_vocabulary_warnings(model: str, vocabulary: Sequence[str],
                                unknown: Mapping[str, Sequence[str]]) -> list[RunWarning]:
    """A zero-shot labeller whose tokenizer does not know a word of more than
    :data:`UNKNOWN_VOCABULARY_SHARE` of its vocabulary entries.

    Args:
        model: the labeller's checkpoint spec.
        vocabulary: its entries.
        unknown: entry -> its words the tokenizer does not know (entries with none left out).
    """
    if not vocabulary or len(unknown) / len(vocabulary) <= UNKNOWN_VOCABULARY_SHARE:
        return []
    examples = "; ".join(f"{entry!r} ({', '.join(words)})" for entry, words in list(unknown.items())[:EXAMPLES])
    more = f" and {len(unknown) - EXAMPLES} more" if len(unknown) > EXAMPLES else ""
    return [RunWarning("unknown_vocabulary", (
        f"the zero-shot labeller {model} does not know a word of {len(unknown)} of its {len(vocabulary)} vocabulary "
        f"entries ({_percent(len(unknown) / len(vocabulary))}, more than {_percent(UNKNOWN_VOCABULARY_SHARE)}): "
        f"{examples}{more}; its tokenizer only spells them, so their labels are guesses (evalset.json, "
        "vocabulary_unknown)"), model)]
