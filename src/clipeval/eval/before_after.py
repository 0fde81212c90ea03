"""Before and after: what a changed checkpoint (fine-tuned) gained or lost on a retrieval set, with paired CIs.

Both checkpoints are evaluated on the same set by :func:`clipeval.eval.retrieval.evaluate_retrieval`
(the saved checkpoint through its spec, so the numbers are those anyone loading it gets), and
every per-query metric's mean difference ``after - before`` is bootstrapped in pairs over the
same queries (:func:`clipeval.metrics.bootstrap.paired_bootstrap`), in both directions. On the
held-out set of the fine-tuning data that is the gain; on a set the fine-tuning never saw, a
negative difference is what the model forgot.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.retrieval import evaluate_retrieval
from clipeval.metrics.bootstrap import paired_bootstrap

DIFFERENCE_COLUMNS = ["role", "dataset", "direction", "metric", "before", "after", "difference", "ci_low",
                      "ci_high", "chance", "trivial", "p_not_positive", "n_queries", "n_candidates",
                      "checkpoint_before", "checkpoint_after"]


@dataclass
class BeforeAfter:
    """Both checkpoints on one set.

    Attributes:
        metrics: :attr:`clipeval.eval.retrieval.RetrievalReport.metrics` of both, with a ``role`` column.
        differences: one row per direction x metric (``hit_rate@k``, ``recall@k``, ``reciprocal_rank``):
            the columns of :data:`DIFFERENCE_COLUMNS`; ``before`` and ``after`` are the means over the
            queries evaluated under both, ``difference`` is ``after - before`` with its paired-bootstrap
            CI, ``p_not_positive`` the share of resamples where it is <= 0; ``chance`` is the metric's value
            under a random ranking and ``trivial`` says it is 1.0 by construction (``k`` at least the
            ``n_candidates`` ranked), both as :func:`clipeval.eval.retrieval.evaluate_retrieval` gives them.
        per_query: :attr:`~clipeval.eval.retrieval.RetrievalReport.per_query` of both.
    """

    metrics: pd.DataFrame
    differences: pd.DataFrame
    per_query: pd.DataFrame


def compare_before_after(dataset: RetrievalSet, before: str, after: str, role: str = "held-out",
                         options: RetrievalOptions = RetrievalOptions(),
                         embed: EmbedOptions = EmbedOptions()) -> BeforeAfter:
    """Evaluate ``before`` and ``after`` on ``dataset`` and bootstrap each metric's difference in pairs.

    Args:
        dataset: the retrieval set.
        before: the base checkpoint spec.
        after: the changed checkpoint spec.
        role: what the set is for (``held-out``: the gain; ``forgetting``: a set the change never saw).
        options: cut-offs, bootstrap resamples and seed.
        embed: the embedding pipeline's options.

    Returns:
        A :class:`BeforeAfter`.
    """
    report = evaluate_retrieval(dataset, [before, after], options, embed)
    metrics = [f"hit_rate@{k}" for k in options.ks] + [f"recall@{k}" for k in options.ks] + ["reciprocal_rank"]
    levels = report.metrics[report.metrics["checkpoint"] == before].set_index(["direction", "k"])
    levels = levels[~levels.index.duplicated()]  # a checkpoint compared with itself is evaluated once per side
    rows = []
    for direction, table in report.per_query.groupby("direction", sort=False):
        values = table.set_index(["checkpoint", "query"])
        for metric in metrics:
            a, b = values.loc[after, metric].align(values.loc[before, metric], join="inner")
            both = a.notna() & b.notna()
            paired = paired_bootstrap(a.to_numpy(), b.to_numpy(), n_resamples=options.n_resamples, seed=options.seed)
            rows.append({"role": role, "dataset": dataset.name, "direction": direction, "metric": metric,
                         "before": float(b[both].mean()), "after": float(a[both].mean()),
                         "difference": paired.difference, "ci_low": paired.low, "ci_high": paired.high,
                         **_chance(levels.loc[direction], metric),
                         "p_not_positive": paired.fraction_not_positive, "n_queries": paired.n,
                         "checkpoint_before": before, "checkpoint_after": after})
    return BeforeAfter(report.metrics.assign(role=role), pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS),
                       report.per_query)


def _chance(levels: pd.DataFrame, metric: str) -> dict:
    """A metric's chance level, whether it is trivial, and the candidates ranked, from one direction's rows of
    ``metrics.csv`` (by ``k``)."""
    name, _, k = metric.partition("@")
    row = levels.loc[int(k)] if k else levels.iloc[0]
    chance = row[f"{name}_chance"] if k else row["mrr_chance"]
    return {"chance": float(chance), "trivial": bool(row["trivial"]) if k else False,
            "n_candidates": int(row["n_candidates"])}
