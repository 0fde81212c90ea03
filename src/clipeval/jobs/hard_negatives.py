"""``hard-negatives``: does each image's true caption score above the hard negative made from it, per category
(SugarCrepe's seven, the scenes' kinds, or any pairs table with ``match`` and ``negative_kind``; docs/benchmarks.md).
One slice: its options, its run, its files (``RunLayout.hard_negative_*``), its manifest entry, its report
section and its command."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clipeval.data.options import SourceOptions
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection, RunTarget
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import checkpoint_label, format_value, html_table
from clipeval.layout import RunLayout

if TYPE_CHECKING:
    import pandas as pd

HARD_NEGATIVES = ReportSection("hard-negatives", "Compositional hard negatives", 46)


@dataclass(frozen=True)
class HardNegativeSource:
    """The pairs ``hard-negatives`` compares: a pairs table, or SugarCrepe's files and COCO's images."""

    pairs: str | None = field(default=None, metadata={
        "help": "a pairs table with match (True on true captions) and negative_kind (a hard negative's category) "
                "columns, and optionally twin_caption (the true caption a negative was made from)"})
    sugarcrepe: Path | None = field(default=None, metadata={
        "help": "SugarCrepe's data/ folder: its seven JSON files (replace_obj.json ... add_att.json)"})
    coco_images: Path | None = field(default=None, metadata={
        "help": "COCO's val2017/ image folder, which SugarCrepe's file names refer to"})
    category: tuple[str, ...] | None = field(default=None, metadata={
        "repeat": True, "help": "read only this SugarCrepe file (its stem: replace_obj, swap_att...; repeat for "
                                "several; default: all seven)"})
    name: str | None = field(default=None, metadata={
        "help": "the set's name in the tables (default: sugarcrepe, or the table's file name)"})


@dataclass(frozen=True)
class HardNegativeOptions:
    """How the accuracies are summarised."""

    n_resamples: int = field(default=1000, metadata={"flag": "--bootstrap",
                                                     "help": "bootstrap resamples for the CIs"})
    seed: int = field(default=0, metadata={"help": "the bootstrap's seed"})


@dataclass
class HardNegativeRun:
    """A ``hard-negatives`` run's tables, every checkpoint and set in each.

    Attributes:
        accuracy: per checkpoint, set (``dataset``) and category (``all`` pooled, each kind, ``mean`` of the kinds)
            the negatives compared and not, the accuracy with its bootstrap CI, and chance (0.5).
        outcomes: per checkpoint and set every hard negative with its true caption, both scores, ``outcome`` (``ok`` or
            why it could not be compared) and ``correct``.
    """

    accuracy: pd.DataFrame
    outcomes: pd.DataFrame


def read_hard_negative_source(source: HardNegativeSource, reading: SourceOptions = SourceOptions()
                              ) -> tuple[str, pd.DataFrame]:
    """The set's name and its pairs table.

    Raises:
        ValueError: not exactly one source, or SugarCrepe's files without COCO's images.
        PairsTableError: the table or files cannot be read.
    """
    from clipeval.data.sources import read_pairs
    from clipeval.data.sugarcrepe import read_sugarcrepe

    if (source.pairs is None) == (source.sugarcrepe is None):
        raise ValueError("give one set of hard negatives: --pairs TABLE, or --sugarcrepe DATA_DIR with "
                         "--coco-images VAL2017_DIR")
    if source.sugarcrepe is not None:
        if source.coco_images is None:
            raise ValueError("SugarCrepe's files name COCO val2017 images: give --coco-images VAL2017_DIR")
        return source.name or "sugarcrepe", read_sugarcrepe(source.sugarcrepe, source.coco_images, source.category)
    return source.name or Path(source.pairs).stem, read_pairs(source.pairs, **asdict(reading))


def hard_negatives(run_dir: str | Path, checkpoints: Sequence[str], sets: Mapping[str, pd.DataFrame],
                   embed: EmbedOptions = EmbedOptions(), options: HardNegativeOptions = HardNegativeOptions(),
                   reading: SourceOptions = SourceOptions()) -> HardNegativeRun:
    """Score every set's pairs under every checkpoint and write ``hard_negative_accuracy.csv``,
    ``hard_negative_outcomes.csv`` (both with a ``dataset`` column: the set's name) and the ``hard_negatives``
    manifest entry.

    Args:
        sets: name -> pairs table (the scenes' negatives and SugarCrepe's, say, side by side in one table).

    Raises:
        ValueError: a table has no ``match`` or ``negative_kind`` column, or no hard negative.
    """
    import pandas as pd

    from clipeval.atomic import write_csv
    from clipeval.eval.hard_negatives import negative_accuracy_table, negative_outcomes, score_hard_negative_pairs
    from clipeval.jobs.manifest import update_manifest

    for name, pairs in sets.items():
        missing = [column for column in ("match", "negative_kind") if column not in pairs]
        if missing:
            raise ValueError(f"{name}: the pairs have no {' or '.join(missing)} column: a hard-negative table marks "
                             "true captions (match True) and each hard negative's category (negative_kind)")
    run = RunLayout(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    accuracy, outcomes = [], []
    for name, pairs in sets.items():
        for spec in checkpoints:
            scored = score_hard_negative_pairs(spec, pairs, embed, reading.image_column, reading.caption_column)
            compared = negative_outcomes(scored, image_column=reading.image_column,
                                         caption_column=reading.caption_column)
            if compared.empty:
                raise ValueError(f"{name} holds no hard negative (no row with match False and a negative_kind)")
            table = negative_accuracy_table(compared, n_resamples=options.n_resamples, seed=options.seed)
            accuracy.append(table.assign(checkpoint=spec, dataset=name)[["checkpoint", "dataset", *table.columns]])
            outcomes.append(compared.assign(checkpoint=spec, dataset=name))
    result = HardNegativeRun(pd.concat(accuracy, ignore_index=True), pd.concat(outcomes, ignore_index=True))
    write_csv(run.hard_negative_accuracy, result.accuracy)
    write_csv(run.hard_negative_outcomes, result.outcomes)
    update_manifest(run.manifest, "hard_negatives",
                    {"datasets": {name: len(pairs) for name, pairs in sets.items()}, "embed": asdict(embed),
                     "options": asdict(options), "reading": asdict(reading)}, list(checkpoints), [])
    return result


def render_hard_negative_accuracy(path: Path) -> str:
    """Accuracy per checkpoint and category with its CI and chance."""
    import pandas as pd

    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    shown = pd.DataFrame({
        "checkpoint": table["checkpoint"].map(checkpoint_label), "dataset": table["dataset"],
        "category": table["negative_kind"], "subset": table["subset"], "negatives": table["n"],
        "not compared": table["n_unscored"],
        "accuracy [95% CI]": [f"{format_value(a)} [{format_value(lo)}, {format_value(hi)}]"
                              for a, lo, hi in zip(table["accuracy"], table["ci_low"], table["ci_high"])],
        "chance": table["chance"]})
    return ("<p>A hard negative counts as right when its image's true caption scores strictly above it; "
            "<code>mean</code> averages the categories (SugarCrepe's headline number).</p>" + html_table(shown))


def _hard_negatives(args: argparse.Namespace) -> None:
    source, reading = options_from(args, HardNegativeSource), options_from(args, SourceOptions)
    name, pairs = read_hard_negative_source(source, reading)
    result = hard_negatives(args.out, args.checkpoint, {name: pairs}, options_from(args, EmbedOptions),
                            options_from(args, HardNegativeOptions), reading)
    for spec, rows in result.accuracy.groupby("checkpoint", sort=False):
        print(f"checkpoint {spec}: accuracy (chance 0.5) with its 95% CI")
        print(rows[["negative_kind", "subset", "n", "n_unscored", "accuracy", "ci_low", "ci_high"]]
              .round(4).to_string(index=False) + "\n")
    run = RunLayout(args.out)
    print(f"-> {args.out} ({run.hard_negative_accuracy.name}, {run.hard_negative_outcomes.name})")


def _holds(folder: Path, steps: set[str]) -> bool:
    return "hard_negatives" in steps or RunLayout(folder).hard_negative_accuracy.is_file()


HARD_NEGATIVE_JOB = Job("hard_negatives", ("12_benchmarks",), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(HARD_NEGATIVES, lambda run: run.hard_negative_accuracy, render_hard_negative_accuracy)),
    CommandFolder("hard-negative accuracy", "python -m clipeval hard-negatives", _holds,
                  lambda run: (run.manifest, run.hard_negative_accuracy),
                  "rerun the same `python -m clipeval hard-negatives ...` command (the vectors are cached)",
                  lambda folder: (f"{RunLayout(folder).hard_negative_outcomes.name} holds every hard negative's two "
                                  "scores: sort by negative_score - true_score to read the worst",)),
    (Command("hard-negatives", "compositional hard negatives: per category, how often an image's true caption "
                               "scores above the hard negative (SugarCrepe, the scenes, or any pairs table with "
                               "match and negative_kind), with CIs and chance 0.5",
             (HardNegativeSource, RunTarget, SourceOptions, HardNegativeOptions, EmbedOptions), _hard_negatives,
             example="python -m clipeval hard-negatives --sugarcrepe sugar-crepe/data --coco-images coco/val2017 "
                     "--checkpoint hf:openai/clip-vit-base-patch32 --out outputs/sugarcrepe",
             takes_spec=True, on_interrupt="run the same command again (the vectors embedded so far are cached)"),))
