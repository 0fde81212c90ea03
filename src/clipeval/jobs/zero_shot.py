"""``classify``: zero-shot classification of labelled images, with CIs, chance levels and published numbers
(docs/benchmarks.md). One slice: its options, its run, its files (``RunLayout.zero_shot_*``), its manifest
entry, its report section and its command."""

from __future__ import annotations

import argparse
import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from clipeval.data.zero_shot_prompts import PROMPT_FILES
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection, RunTarget
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import checkpoint_label, format_value, html_table
from clipeval.layout import RunLayout

if TYPE_CHECKING:
    import pandas as pd

    from clipeval.data.classification_sets import ClassificationSet

ZERO_SHOT = ReportSection("zero-shot", "Zero-shot classification", 45)
PUBLISHED_DATASETS = ("imagenet1k", "cifar10", "cifar100")  # the datasets open_clip's results table gives


@dataclass(frozen=True)
class ClassificationSource:
    """The labelled images ``classify`` reads (one of three kinds) and its class names and templates."""

    images: Path | None = field(default=None, metadata={
        "help": "a folder with one subfolder of images per class (ImageNet's val layout: val/n01440764/*.JPEG)"})
    hf_dataset: str | None = field(default=None, metadata={
        "help": "a Hugging Face image-classification dataset: save_to_disk folder, Parquet files or hf:owner/name "
                "(class names from its label feature)"})
    shards: tuple[str, ...] | None = field(default=None, metadata={
        "repeat": True, "help": "shards with a class column: webdataset tars (the class in each sample's json), "
                                "parquet or CSV; a folder, glob or brace pattern (repeat for several)"})
    image_column: str = field(default="image", metadata={
        "help": "the image column (a dataset or shards; CIFAR's on the hub is img)"})
    label_column: str = field(default="label", metadata={
        "help": "the class column (a dataset or shards; CIFAR-100's on the hub is fine_label)"})
    split: str | None = field(default=None, metadata={"help": "the dataset's split, when it has several"})
    prompts: str | None = field(default=None, metadata={
        "choices": tuple(PROMPT_FILES), "help": "packaged class names and templates (docs/benchmarks.md); "
                                                "imagenet1k also maps ImageNet's folder names to class names"})
    classnames: Path | None = field(default=None, metadata={
        "help": "class names in label order, one a line (for --images also {folder: name} JSON or folder<TAB>name "
                "lines); they replace the packaged and the dataset's names"})
    templates: Path | None = field(default=None, metadata={
        "help": "prompt templates, one a line, with {c} where the class name goes; they replace the packaged ones"})
    name: str | None = field(default=None, metadata={
        "help": "the set's name in the tables (default: --prompts, else the source's); imagenet1k, cifar10 or "
                "cifar100 are compared with published numbers"})
    max_images: int | None = field(default=None, metadata={
        "metavar": "N", "help": "classify only the set's first N images (a smoke run: not comparable with published "
                                "numbers; the whole set is still read)"})
    max_templates: int | None = field(default=None, metadata={
        "metavar": "N", "help": "average only the first N templates per class (a smoke run: not comparable with "
                                "published numbers)"})


@dataclass(frozen=True)
class ZeroShotOptions:
    """How the accuracies are summarised."""

    n_resamples: int = field(default=1000, metadata={"flag": "--bootstrap",
                                                     "help": "bootstrap resamples for the CIs"})
    seed: int = field(default=0, metadata={"help": "the bootstrap's seed"})
    worst: int = field(default=10, metadata={"metavar": "N", "help": "the N worst classes printed and reported"})


@dataclass
class Classification:
    """A ``classify`` run's tables, every checkpoint and dataset in each (their files: ``RunLayout.zero_shot_*``).

    Attributes:
        metrics: top-1, top-5 accuracy and mean per-class recall with CIs, chance, and the published value
            (percent), its source and whether the measurement ``deviates`` from it, where one is published.
        per_class: per class its images, top-1 hits, recall and how often it was predicted.
        confusion: the confusion matrix's non-zero cells.
        predictions: per image its status, top-5 classes and scores.
        worst: the ``worst`` lowest-recall classes of each checkpoint and dataset.
        stats: per checkpoint and dataset, counts, cache hits and timings.
    """

    metrics: pd.DataFrame
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame
    worst: pd.DataFrame
    stats: dict


def read_classification_source(source: ClassificationSource) -> tuple[ClassificationSet, tuple[str, ...]]:
    """The labelled set and its templates a :class:`ClassificationSource` names.

    Raises:
        ValueError: not exactly one kind of images, no templates, or a cap below 1.
        PairsTableError: the images, class names or templates cannot be used (one line says why).
    """
    from clipeval.data.classification_sets import (
        read_hf_classification,
        read_image_folder_classes,
        read_shard_classes,
    )
    from clipeval.data.zero_shot_prompts import (
        imagenet_folder_classnames,
        packaged_prompts,
        read_classnames,
        read_templates,
    )

    if sum(given is not None for given in (source.images, source.hf_dataset, source.shards)) != 1:
        raise ValueError("give one labelled image set: --images FOLDER, --hf-dataset SOURCE or --shards SHARDS")
    for cap, what in ((source.max_images, "max_images"), (source.max_templates, "max_templates")):
        if cap is not None and cap < 1:
            raise ValueError(f"{what} must be at least 1, not {cap}")
    packaged = packaged_prompts(source.prompts) if source.prompts else None
    if source.templates is not None:
        templates = read_templates(source.templates)
    elif packaged is not None:
        templates = packaged.templates
    else:
        raise ValueError("give the prompt templates: --templates FILE (one a line, {c} for the class name) or "
                         f"--prompts NAME ({', '.join(PROMPT_FILES)})")
    name = source.name or source.prompts
    if source.images is not None:
        names = source.classnames or (imagenet_folder_classnames() if source.prompts == "imagenet1k" else
                                      packaged.classnames if packaged is not None else None)
        dataset = read_image_folder_classes(source.images, names, name)
    else:
        names = read_classnames(source.classnames) if source.classnames else \
            packaged.classnames if packaged is not None else None
        if source.hf_dataset is not None:
            dataset = read_hf_classification(source.hf_dataset, source.image_column, source.label_column,
                                             split=source.split, classnames=names, name=name)
        else:
            dataset = read_shard_classes(list(source.shards), source.label_column, source.image_column,
                                         classnames=names, name=name)
    if source.max_images is not None:
        dataset = replace(dataset, images=dataset.images.iloc[:source.max_images].reset_index(drop=True))
    return dataset, tuple(templates)[:source.max_templates]


def classify(run_dir: str | Path, checkpoints: Sequence[str],
             datasets: Mapping[str, tuple[ClassificationSet, Sequence[str]]], embed: EmbedOptions = EmbedOptions(),
             options: ZeroShotOptions = ZeroShotOptions()) -> Classification:
    """Classify each dataset's images zero-shot under every checkpoint and write the run folder's
    ``zero_shot_*`` files and the ``classify`` manifest entry.

    Args:
        datasets: name -> (labelled images, templates); a name in :data:`PUBLISHED_DATASETS` is compared with
            the catalogue's published top-1 accuracy (:func:`clipeval.models.catalogue.published_zero_shot`).
    """
    import pandas as pd

    from clipeval.atomic import atomic_path, write_csv, write_json
    from clipeval.eval.zero_shot_classification import zero_shot_classify
    from clipeval.jobs.manifest import update_manifest
    from clipeval.metrics.classification import worst_classes

    run = RunLayout(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list] = {"metrics": [], "per_class": [], "confusion": [], "predictions": [], "worst": []}
    stats: dict = {}
    for name, (dataset, templates) in datasets.items():
        dataset = replace(dataset, name=name)
        for spec in checkpoints:
            report = zero_shot_classify(spec, dataset, templates, embed, n_resamples=options.n_resamples,
                                        seed=options.seed)
            where = {"checkpoint": spec, "dataset": name}
            tables["metrics"].append(report.metrics)
            for key, table in (("per_class", report.per_class), ("confusion", report.confusion),
                               ("predictions", report.predictions),
                               ("worst", worst_classes(report.per_class, options.worst))):
                tables[key].append(table.assign(**where)[[*where, *table.columns]])
            stats.setdefault(spec, {})[name] = report.stats
    frames = {key: pd.concat(parts, ignore_index=True) for key, parts in tables.items()}
    metrics = _with_published(frames["metrics"], list(checkpoints))
    write_csv(run.zero_shot_metrics, metrics)
    write_csv(run.zero_shot_per_class, frames["per_class"])
    write_csv(run.zero_shot_confusion, frames["confusion"])
    with atomic_path(run.zero_shot_predictions) as temp:
        frames["predictions"].to_parquet(temp, index=False)
    write_json(run.zero_shot_stats, {"checkpoints": stats})
    update_manifest(run.manifest, "classify",
                    {"datasets": {name: {"source": dataset.source, "classes": len(dataset.classnames),
                                         "templates": list(templates)}
                                  for name, (dataset, templates) in datasets.items()},
                     "embed": asdict(embed), "options": asdict(options)},
                    list(checkpoints), [])  # an image tree is described, not hashed: ImageNet's val is 6 GB
    return Classification(metrics, frames["per_class"], frames["confusion"], frames["predictions"], frames["worst"],
                          stats)


def _with_published(metrics: pd.DataFrame, checkpoints: list[str]) -> pd.DataFrame:
    """The metrics with the catalogue's published value beside each, in percent, and whether it deviates."""
    from clipeval.metrics.published import deviates
    from clipeval.models.catalogue import published_zero_shot

    published = published_zero_shot(checkpoints).rename(columns={"source": "published_source"})
    merged = metrics.merge(published, on=["checkpoint", "dataset", "metric"], how="left")
    merged["deviates"] = deviates(merged["estimate"] * 100, merged["ci_low"] * 100, merged["ci_high"] * 100,
                                  merged["published"])
    return merged


def render_zero_shot_metrics(path: Path) -> str:
    """Top-1, top-5 and mean per-class recall per checkpoint and dataset, with CI, chance and published value."""
    import pandas as pd

    metrics = pd.read_csv(path)
    shown = pd.DataFrame({
        "checkpoint": metrics["checkpoint"].map(checkpoint_label), "dataset": metrics["dataset"],
        "metric": metrics["metric"],
        "estimate [95% CI]": [f"{format_value(e)} [{format_value(lo)}, {format_value(hi)}]"
                              for e, lo, hi in zip(metrics["estimate"], metrics["ci_low"], metrics["ci_high"])],
        "chance": metrics["chance"], "images": metrics["n_images"], "classes": metrics["n_classes"],
        "published (%)": metrics["published"],
        "deviates": metrics["deviates"].map({True: "yes: beyond the tolerance and the CI", False: ""})})
    flagged = int(metrics["deviates"].sum())
    head = (f'<div class="warning"><span class="badge">{flagged} deviate</span> from the published number beyond '
            "the tolerance and the bootstrap CI</div>" if flagged else "")
    return head + html_table(shown)


def render_worst_classes(path: Path) -> str:
    """The lowest-recall classes of each checkpoint and dataset (from the per-class table)."""
    import pandas as pd

    from clipeval.metrics.classification import worst_classes

    per_class = pd.read_csv(path)
    parts = []
    for (spec, name), rows in per_class.groupby(["checkpoint", "dataset"], sort=False):
        worst = worst_classes(rows, ZeroShotOptions.worst)
        parts.append(f"<h3>{html.escape(checkpoint_label(spec))} on {html.escape(str(name))}: the "
                     f"{len(worst)} worst classes</h3>"
                     + html_table(worst[["classname", "n_images", "n_correct", "recall", "n_predicted"]]))
    return "".join(parts)


def _classify(args: argparse.Namespace) -> None:
    import pandas as pd

    source = options_from(args, ClassificationSource)
    options = options_from(args, ZeroShotOptions)
    dataset, templates = read_classification_source(source)
    result = classify(args.out, args.checkpoint, {dataset.name: (dataset, templates)},
                      options_from(args, EmbedOptions), options)
    for spec, rows in result.metrics.groupby("checkpoint", sort=False):
        print(f"checkpoint {spec}: {len(dataset.images)} images, {len(dataset.classnames)} classes, "
              f"{len(templates)} template(s)")
        shown = pd.DataFrame({
            "metric": rows["metric"], "estimate": rows["estimate"].round(4),
            "95% CI": [f"[{low:.4f}, {high:.4f}]" for low, high in zip(rows["ci_low"], rows["ci_high"])],
            "chance": rows["chance"].round(4),
            "note": ["trivial: k covers every class" if trivial else "" for trivial in rows["trivial"]]})
        if rows["published"].notna().any():
            shown["published %"] = rows["published"].map(lambda value: "" if pd.isna(value) else f"{value:.2f}")
            shown["deviates"] = rows["deviates"].map({True: "yes", False: ""})
        print(shown.to_string(index=False))
        worst = result.worst[result.worst["checkpoint"] == spec]
        print(f"worst {len(worst)} classes (recall): "
              + ", ".join(f"{row.classname} {row.recall:.2f}" for row in worst.itertuples()) + "\n")
    run = RunLayout(args.out)
    written = (run.zero_shot_metrics, run.zero_shot_per_class, run.zero_shot_confusion, run.zero_shot_predictions)
    print(f"-> {args.out} ({', '.join(path.name for path in written)})")


def _holds(folder: Path, steps: set[str]) -> bool:
    return "classify" in steps or RunLayout(folder).zero_shot_metrics.is_file()


CLASSIFY = Job("classify", ("12_benchmarks",), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(ZERO_SHOT, lambda run: run.zero_shot_metrics, render_zero_shot_metrics),
    Part(ZERO_SHOT, lambda run: run.zero_shot_per_class, render_worst_classes)),
    CommandFolder("zero-shot classification", "python -m clipeval classify", _holds,
                  lambda run: (run.manifest, run.zero_shot_metrics, run.zero_shot_per_class),
                  "rerun the same `python -m clipeval classify ...` command (the class and image vectors are cached)",
                  lambda folder: (f"{RunLayout(folder).zero_shot_predictions.name} holds every image's top-5 classes; "
                                  f"{RunLayout(folder).zero_shot_confusion.name} the confusion matrix",)),
    (Command("classify", "zero-shot classification of labelled images (a class-folder tree, a Hugging Face dataset "
                         "or shards): top-1/top-5 accuracy and mean per-class recall with CIs, chance and published "
                         "numbers", (ClassificationSource, RunTarget, ZeroShotOptions, EmbedOptions), _classify,
             example="python -m clipeval classify --images imagenet/val --prompts imagenet1k "
                     "--checkpoint hf:openai/clip-vit-base-patch32 --out outputs/imagenet-zero-shot",
             takes_spec=True,
             on_interrupt="run the same command again (the class and image vectors embedded so far are cached)"),))
