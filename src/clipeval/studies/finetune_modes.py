"""Notebook 11's study: fine-tune the dual encoder with relation-swapped hard negatives, three ways, same budget,
each measured on the test split against the base with paired bootstrap CIs (docs/fine-tuning.md, "The
relations study").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv
from clipeval.data.scenes import RELATION_WORDS, read_scenes_retrieval
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.eval.before_after import compare_before_after
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.scenes_benchmark import hard_negative_outcomes, score_scene_pairs
from clipeval.layout import RunLayout
from clipeval.metrics.bootstrap import paired_bootstrap
from clipeval.models.registry import load_encoder
from clipeval.train.finetune import finetune
from clipeval.train.options import FinetuneConfig

RELATION_PATTERN = re.compile(r"\b(" + "|".join(sorted({word for words in RELATION_WORDS.values()
                                                        for word in words}, key=len, reverse=True)) + r")\b")


@dataclass
class FinetuneStudy:
    """The study's tables (each also written to the run folder: ``RunLayout.finetune_<table>``).

    Attributes:
        hard_negatives: per mode and negative kind: accuracy before and after, the paired difference and its CI.
        retrieval: per mode, query subset (``all``, ``relation``, ``no relation``), direction and metric:
            before, after, the paired difference and its CI.
        history: per mode and logged epoch: training loss and validation metrics.
        costs: per mode: trainable and total parameters, steps, seconds, steps per second.
        specs: per mode, the saved checkpoint's spec.
    """

    hard_negatives: pd.DataFrame
    retrieval: pd.DataFrame
    history: pd.DataFrame
    costs: pd.DataFrame
    specs: dict[str, str]


def states_relation(caption: str) -> bool:
    """Whether a scenes caption states a spatial relation (``left of``, ``above``, ``under``...)."""
    return bool(RELATION_PATTERN.search(caption))


def hard_negative_correct(encoder, scenes_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """Every hard negative of a split with ``correct``: its true twin caption scores higher on its image."""
    return hard_negative_outcomes(score_scene_pairs(encoder, scenes_dir, split)).reset_index(drop=True)


def _hard_negative_rows(mode: str, before: pd.DataFrame, after: pd.DataFrame, n_resamples: int,
                        seed: int) -> list[dict]:
    rows = []
    for kind in ["all", *sorted(before["negative_kind"].unique())]:
        keep = before["negative_kind"].eq(kind) if kind != "all" else before["negative_kind"].notna()
        a, b = after.loc[keep, "correct"].to_numpy(float), before.loc[keep, "correct"].to_numpy(float)
        paired = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
        rows.append({"mode": mode, "negative_kind": kind, "n": int(keep.sum()), "before": b.mean(), "after": a.mean(),
                     "difference": paired.difference, "ci_low": paired.low, "ci_high": paired.high})
    return rows


def _retrieval_rows(mode: str, compared, dataset, n_resamples: int, seed: int) -> list[dict]:
    """Paired differences for all queries, and for text->image queries with and without a relation."""
    rows = compared.differences.assign(mode=mode, queries="all").to_dict("records")
    relation = dataset.queries["text"].map(states_relation).to_numpy()
    per_query = compared.per_query[compared.per_query["direction"] == "text_to_image"]
    before_spec, after_spec = compared.differences["checkpoint_before"].iloc[0], \
        compared.differences["checkpoint_after"].iloc[0]
    values = per_query.set_index(["checkpoint", "query"])
    for subset, keep in (("relation", relation), ("no relation", ~relation)):
        queries = pd.Index(range(len(relation)))[keep]
        for metric in ("hit_rate@1", "hit_rate@5", "reciprocal_rank"):
            a = values.loc[after_spec, metric].reindex(queries).to_numpy()
            b = values.loc[before_spec, metric].reindex(queries).to_numpy()
            paired = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed)
            rows.append({"mode": mode, "queries": subset, "role": "held-out", "dataset": dataset.name,
                         "direction": "text_to_image", "metric": metric, "before": float(b.mean()),
                         "after": float(a.mean()), "difference": paired.difference, "ci_low": paired.low,
                         "ci_high": paired.high, "n_queries": paired.n})
    return rows


def compute_finetune_study(base_spec: str, scenes_dir: str | Path, out_dir: str | Path, run_dir: str | Path,
                           modes: dict[str, float], config: FinetuneConfig, n_resamples: int = 1000
                           ) -> FinetuneStudy:
    """Fine-tune ``base_spec`` once per mode and compare each result with the base on the test split.

    Args:
        out_dir: where each mode's run folder (``<out_dir>/<mode>/checkpoint``...) goes.
        run_dir: where the study's tables go (``RunLayout.finetune_hard_negatives``...).
        modes: mode -> its peak learning rate; every other setting is ``config``'s (the same budget).
    """
    scenes_dir, out_dir = Path(scenes_dir), Path(out_dir)
    pairs = read_pairs(scenes_dir / "pairs_train.csv")
    validation, test = read_scenes_retrieval(scenes_dir, "val"), read_scenes_retrieval(scenes_dir, "test")
    embed = EmbedOptions(batch_size=config.eval_batch_size, device=config.device, progress=False,
                         embedding_cache=False)
    options = RetrievalOptions(n_resamples=n_resamples, seed=config.seed)
    before = hard_negative_correct(load_encoder(base_spec, config.device, "fp32", progress=False), scenes_dir)
    hard, retrieval, history, costs, specs = [], [], [], [], {}
    for mode, lr in modes.items():
        result = finetune(base_spec, pairs, out_dir / mode, replace(config, mode=mode, lr=lr), validation)
        specs[mode] = result.spec
        hard += _hard_negative_rows(mode, before, hard_negative_correct(result.encoder, scenes_dir), n_resamples,
                                    config.seed)
        compared = compare_before_after(test, base_spec, result.spec, "held-out", options, embed)
        retrieval += _retrieval_rows(mode, compared, test, n_resamples, config.seed)
        history += [{"mode": mode, **entry} for entry in result.history["epochs"]]
        costs.append({"mode": mode, "lr": lr, **{key: result.history[key] for key in (
            "trainable_parameters", "total_parameters", "total_steps", "micro_batch_size", "train_seconds",
            "steps_per_s", "n_train_hard_negatives")}})
    study = FinetuneStudy(pd.DataFrame(hard), pd.DataFrame(retrieval), pd.DataFrame(history), pd.DataFrame(costs),
                          specs)
    layout = RunLayout(run_dir)
    for table in ("hard_negatives", "retrieval", "history", "costs"):
        write_csv(getattr(layout, f"finetune_{table}"), getattr(study, table))
    return study
