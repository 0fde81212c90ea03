"""Notebook 07's study: pseudo-labels on the scenes, whose truth is known, measured against it
(docs/eval-sets.md, "What the labels are worth"). Only the notebook calls this; building an eval set from any
folder is :func:`clipeval.jobs.evalset_build.build_evalset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.atomic import write_csv
from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables
from clipeval.data.scenes import SCENE_CLASSES, scene_class_judge
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.eval.retrieval import evaluate_retrieval
from clipeval.labels.base import LabelRun, image_table, run_stats
from clipeval.labels.evalset import write_evalset
from clipeval.labels.quality import judged_set, label_precision_recall, metric_bias, precision_recall_by_threshold
from clipeval.labels.registry import LabelOptions, build_labeller
from clipeval.layout import EvalsetLayout, RunLayout


@dataclass
class LabelStudy:
    """One labeller studied on the scenes (notebook 07).

    Attributes:
        run: its labels at every confidence (threshold 0), with every image accounted for.
        threshold: the cut the eval set uses.
        pseudo, truth: the eval set built at ``threshold``, and its twin with the true relevance.
        metrics: retrieval metrics per checkpoint on both sets (``set``: ``pseudo`` or ``true``).
        per_query: the pseudo set's per-query table, with ``judgement`` for each query.
    """

    name: str
    run: LabelRun
    threshold: float
    pseudo: RetrievalSet
    truth: RetrievalSet
    quality: dict
    sweep: pd.DataFrame
    metrics: pd.DataFrame
    bias: pd.DataFrame
    per_query: pd.DataFrame

    @property
    def unlabelled(self) -> str | None:
        """Why the source has no eval set to evaluate (no label reached its threshold), or None."""
        if len(self.pseudo.queries):
            return None
        best = self.run.labels["confidence"].max() if len(self.run.labels) else float("nan")
        return (f"{self.name}: no label reached its threshold {self.threshold:g} (its most confident label: "
                f"{best:.3g}), so its eval set has no query and no checkpoint is evaluated on it")


PER_QUERY_COLUMNS = ["checkpoint", "direction", "query", "query_name", "n_relevant", "first_rank", "reciprocal_rank",
                     "judgement"]


def _without_queries(name: str, kept: LabelRun, base_dir: Path) -> RetrievalSet:
    """The pseudo set of a source whose labels all fell below its threshold: every image, no query."""
    return RetrievalSet(f"{name} (pseudo)", pd.DataFrame({"query_id": [], "text": []}),
                        kept.images[["image"]].reset_index(drop=True), np.empty((0, 2), dtype=np.int64), str(base_dir))


def _at_threshold(run: LabelRun, threshold: float) -> LabelRun:
    labels = run.labels[run.labels["confidence"] >= threshold].assign(threshold=threshold).reset_index(drop=True)
    read = run.images["status"].where(run.images["status"] != "no_label", "ok").tolist()
    images = image_table(run.images["image"].tolist(), read, run.images["error"].where(
        run.images["status"] != "no_label", "").tolist(), labels)
    counts = ("images", "images_labelled", "labels", "unique_texts", "status_counts")
    settings = {key: value for key, value in run.stats.items() if key not in counts}
    return LabelRun(labels, images, run_stats(labels, images, **{**settings, "threshold": threshold}))


def judge_queries(per_query: pd.DataFrame, pseudo: RetrievalSet, judge) -> pd.Series:
    """For each text -> image query of a pseudo set: is a miss the labels' fault or the model's?

    ``label error (missed)``: the model's first result is truly relevant but not labelled so;
    ``label error (wrong)``: some of the query's labelled images are not truly relevant;
    ``model error``: the labels are right and the model still ranks a wrong image first;
    ``hit``: the first result is labelled relevant.
    """
    texts, refs = pseudo.queries["text"].astype(str).tolist(), pseudo.images["image"].astype(str).tolist()
    relevant = pd.DataFrame(pseudo.relevant, columns=["query", "item"]).groupby("query")["item"].apply(list)
    judgements = []
    for row in per_query.itertuples():
        text, top = texts[row.query], row.top_items[0] if len(row.top_items) else None
        if row.first_rank == 1:
            judgements.append("hit")
        elif top is not None and judge(text, refs[top]):
            judgements.append("label error (missed)")
        elif not all(judge(text, refs[item]) for item in relevant.get(row.query, [])):
            judgements.append("label error (wrong)")
        else:
            judgements.append("model error")
    return pd.Series(judgements, index=per_query.index, name="judgement")


def compute_label_study(run_dir: str | Path, scenes_dir: str | Path, sources: dict[str, dict],
                        checkpoints: Sequence[str], split: str = "test",
                        retrieval: RetrievalOptions = RetrievalOptions(), embed: EmbedOptions = EmbedOptions(),
                        thresholds: Sequence[float] = tuple(np.round(np.arange(0, 1.0, 0.05), 2))) -> list[LabelStudy]:
    """Notebook 07: label the scenes' ``split`` images with each source, and measure the labels; writes the eval
    sets and the ``label_*`` tables into ``run_dir``.

    Args:
        sources: name -> the labeller's ``kind`` and its other :class:`~clipeval.labels.registry.LabelOptions`;
            the labellers run at threshold 0 and their ``threshold`` cuts the eval set.
        retrieval, embed: as for retrieval (``embed.device`` and ``embed.progress`` for the labellers too).
    """
    layout, scenes_dir = RunLayout(run_dir), Path(scenes_dir)
    scenes = pd.read_csv(scenes_dir / "scenes.csv", keep_default_na=False)
    refs = scenes.loc[scenes["split"] == split, "image"].tolist()
    judge = scene_class_judge(scenes_dir)
    studies = []
    for name, settings in sources.items():
        settings = {"vocabulary": SCENE_CLASSES, **settings}
        threshold = settings.pop("threshold")
        labelling = LabelOptions(settings.pop("kind"), threshold=0.0, vocabulary=tuple(settings.pop("vocabulary")),
                                 **settings)
        everything = build_labeller(labelling, embed.device, embed.progress).label(refs, scenes_dir)
        kept = _at_threshold(everything, threshold)
        folder = write_evalset(kept, layout.evalset(name), scenes_dir)
        if kept.labels.empty:  # nothing to evaluate: the study still reports the labels and the sweep
            pseudo = _without_queries(name, kept, scenes_dir)
            metrics = pd.DataFrame(columns=["checkpoint", "dataset", "direction", "k", "set"])
            bias, per_query = metric_bias(metrics, metrics), pd.DataFrame(columns=PER_QUERY_COLUMNS)
        else:
            labelled = EvalsetLayout(folder)
            pseudo = read_retrieval_tables(labelled.queries, labelled.images, labelled.relevance,
                                           name=f"{name} (pseudo)")
            # the eval set's images.csv names the scenes' images from its own folder: they are its image root
            scenes = replace(embed, fetch=replace(embed.fetch, image_root=Path(scenes_dir)))
            reports = {kind: evaluate_retrieval(dataset, list(checkpoints), retrieval, scenes)
                       for kind, dataset in (("pseudo", pseudo), ("true", judged_set(pseudo, judge)))}
            per_query = reports["pseudo"].per_query
            per_query = per_query[per_query["direction"] == "text_to_image"].copy()
            per_query["judgement"] = judge_queries(per_query, pseudo, judge)
            metrics = pd.concat([report.metrics.assign(set=kind) for kind, report in reports.items()],
                                ignore_index=True)
            bias = metric_bias(reports["pseudo"].metrics, reports["true"].metrics)
        truth = judged_set(pseudo, judge)
        studies.append(LabelStudy(name, everything, threshold, pseudo, truth, label_precision_recall(pseudo, truth),
                                  precision_recall_by_threshold(everything.labels, judge, refs, thresholds),
                                  metrics, bias, per_query))
    write_csv(layout.label_quality, pd.DataFrame([{"source": s.name, "threshold": s.threshold, **s.quality}
                                                  for s in studies]))
    write_csv(layout.label_threshold_sweep, pd.concat([s.sweep.assign(source=s.name) for s in studies]))
    write_csv(layout.label_metric_bias, pd.concat([s.bias.assign(source=s.name) for s in studies]))
    return studies
