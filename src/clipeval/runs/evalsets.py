"""Steps of the pseudo-labelling work: build an eval set from a folder of images, and study the labels' quality.

:func:`build_evalset` is what ``python -m clipeval build-evalset`` runs: label every image of a
folder, write the eval-set files (:mod:`clipeval.labels.evalset`), reuse them when the same
images and settings were labelled before. :func:`label_study` is notebook 07's work on the
scenes, whose truth is known: for each labeller, labels at every confidence, the threshold's
precision / recall / coverage trade-off, and retrieval metrics on the pseudo set beside the same
metrics on its true twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.atomic import write_csv
from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables
from clipeval.data.scenes import SCENE_CLASSES, scene_class_judge
from clipeval.data.sources import IMAGE_EXTENSIONS, image_files
from clipeval.eval.embed import EmbedOptions
from clipeval.eval.retrieval import evaluate_retrieval
from clipeval.labels.base import LabelRun, image_table, run_stats
from clipeval.labels.evalset import existing_evalset, write_evalset
from clipeval.labels.quality import judged_set, label_precision_recall, metric_bias, precision_recall_by_threshold
from clipeval.labels.registry import build_labeller
from clipeval.runs.manifest import update_manifest


def list_images(folder: str | Path) -> list[str]:
    """Every image file under ``folder`` (:func:`clipeval.data.sources.image_files`), as relative paths."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder {root}")
    return [path.relative_to(root).as_posix() for path in image_files(root)]


@dataclass
class BuiltEvalset:
    """An eval-set folder and what it holds.

    Attributes:
        folder: where the files are.
        dataset: the set as the retrieval evaluation reads it.
        labels: every kept label (``labels.csv``).
        reused: whether an earlier build with the same images and settings was reused.
    """

    folder: Path
    dataset: RetrievalSet
    labels: pd.DataFrame
    reused: bool


def _fingerprint(images_dir: Path, refs: list[str], settings: dict) -> dict:
    files = [[ref, (images_dir / ref).stat().st_size, (images_dir / ref).stat().st_mtime_ns] for ref in refs]
    return {"settings": settings, "images": files}


def build_evalset(out_dir: str | Path, images_dir: str | Path, labeller: str = "classifier", model: str | None = None,
                  threshold: float | None = None, top_k: int = 1, vocabulary: Sequence[str] = (),
                  device: str = "auto", batch_size: int = 16, rebuild: bool = False,
                  progress: bool = True) -> BuiltEvalset:
    """Label every image under ``images_dir`` and write an eval set to ``out_dir``; reuse an identical earlier build.

    Raises:
        FileNotFoundError: ``images_dir`` is not a folder.
        ValueError: no image file in it, a bad labeller setting, or no label at the threshold (the
            files are written all the same, ``labels.csv`` empty, for a look at what was labelled).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    refs = list_images(images_dir)
    if not refs:
        raise ValueError(f"no image file under {images_dir} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    settings = {"labeller": labeller, "model": model, "threshold": threshold, "top_k": top_k,
                "vocabulary": list(vocabulary)}
    fingerprint = _fingerprint(images_dir, refs, settings)
    reused = not rebuild and existing_evalset(out_dir, fingerprint)
    if not reused:
        run = build_labeller(labeller, model, threshold, top_k, vocabulary, device, batch_size,
                             progress=progress).label(refs, images_dir)
        write_evalset(run, out_dir, images_dir, fingerprint=fingerprint)
        update_manifest(out_dir / "manifest.json", "build-evalset", {**settings, "images_dir": str(images_dir)},
                        [], [])
    labels = pd.read_csv(out_dir / "labels.csv", keep_default_na=False, na_values=[""])
    if labels.empty:
        raise ValueError(f"no image of {images_dir} got a label at threshold {threshold} from the {labeller} labeller "
                         f"({len(refs)} images; {out_dir / 'images.csv'} says why for each): the eval set has no "
                         "query; lower --threshold, or use another labeller or model")
    dataset = read_retrieval_tables(out_dir / "queries.csv", out_dir / "images.csv", out_dir / "relevance.csv",
                                    name=out_dir.name)
    return BuiltEvalset(out_dir, dataset, labels, reused)


@dataclass
class LabelStudy:
    """One labeller studied on the scenes (notebook 07).

    Attributes:
        name: the source's name in the tables.
        run: its labels at every confidence (threshold 0), with every image accounted for.
        threshold: the cut the eval set uses.
        pseudo: the eval set built from the labels at ``threshold``.
        truth: the same queries and images with the true relevance.
        quality: :func:`~clipeval.labels.quality.label_precision_recall` at ``threshold``.
        sweep: :func:`~clipeval.labels.quality.precision_recall_by_threshold`.
        metrics: retrieval metrics per checkpoint on the pseudo set (``set = pseudo``) and the
            true set (``set = true``).
        bias: :func:`~clipeval.labels.quality.metric_bias`.
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


def label_study(run_dir: str | Path, scenes_dir: str | Path, sources: dict[str, dict], checkpoints: Sequence[str],
                split: str = "test", thresholds: Sequence[float] = tuple(np.round(np.arange(0, 1.0, 0.05), 2)),
                ks: Sequence[int] = (1, 5, 10), n_resamples: int = 1000, seed: int = 0, device: str = "auto",
                progress: bool = True) -> list[LabelStudy]:
    """Notebook 07: label the scenes' ``split`` images with each source, and measure the labels.

    Args:
        run_dir: the profile's run folder; writes ``evalsets/<source>/`` (the eval-set files),
            ``label_quality.csv``, ``label_threshold_sweep.csv`` and ``label_metric_bias.csv``.
        scenes_dir: the scenes folder (its ``scenes.csv`` is the truth).
        sources: name -> ``build_labeller`` settings (``kind``, ``model``, ``threshold``...); the
            labellers run at threshold 0 and their ``threshold`` cuts the eval set.
        checkpoints: the checkpoints evaluated on every set.
        split: the scenes split whose images are labelled.
        thresholds: the sweep's cuts.
        ks, n_resamples, seed, device, progress: as for retrieval.
    """
    run_dir, scenes_dir = Path(run_dir), Path(scenes_dir)
    scenes = pd.read_csv(scenes_dir / "scenes.csv", keep_default_na=False)
    refs = scenes.loc[scenes["split"] == split, "image"].tolist()
    judge = scene_class_judge(scenes_dir)
    studies = []
    for name, settings in sources.items():
        settings = {"vocabulary": SCENE_CLASSES, **settings}
        threshold = settings.pop("threshold")
        everything = build_labeller(settings.pop("kind"), threshold=0.0, device=device, progress=progress,
                                    **settings).label(refs, scenes_dir)
        kept = _at_threshold(everything, threshold)
        folder = write_evalset(kept, run_dir / "evalsets" / name, scenes_dir)
        if kept.labels.empty:  # nothing to evaluate: the study still reports the labels and the sweep
            pseudo = _without_queries(name, kept, scenes_dir)
            metrics = pd.DataFrame(columns=["checkpoint", "dataset", "direction", "k", "set"])
            bias, per_query = metric_bias(metrics, metrics), pd.DataFrame(columns=PER_QUERY_COLUMNS)
        else:
            pseudo = read_retrieval_tables(folder / "queries.csv", folder / "images.csv", folder / "relevance.csv",
                                           name=f"{name} (pseudo)")
            reports = {kind: evaluate_retrieval(dataset, list(checkpoints), ks=ks, n_resamples=n_resamples,
                                                seed=seed, device=device, progress=progress, options=EmbedOptions())
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
    write_csv(run_dir / "label_quality.csv", pd.DataFrame([{"source": s.name, "threshold": s.threshold, **s.quality}
                                                           for s in studies]))
    write_csv(run_dir / "label_threshold_sweep.csv", pd.concat([s.sweep.assign(source=s.name) for s in studies]))
    write_csv(run_dir / "label_metric_bias.csv", pd.concat([s.bias.assign(source=s.name) for s in studies]))
    update_manifest(run_dir / "manifest.json", "label-study",
                    {"sources": sources, "split": split, "ks": list(ks), "n_resamples": n_resamples},
                    list(checkpoints), [str(scenes_dir / "scenes.csv")], seed=seed)
    return studies
