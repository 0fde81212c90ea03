"""Fine-tuning: ``finetune`` (a checkpoint on pairs: its gain and forgetting) and notebook 11's study of the modes."""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.data.fetch import FetchOptions
from clipeval.data.options import SourceOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import checkpoint_label, html_table, read_json, render_table
from clipeval.layout import FinetuneLayout, RunLayout
from clipeval.train.options import FinetuneConfig, FinetuneData

FINE_TUNING = ReportSection("finetune", "Fine-tuning", 85)
THIS_FINE_TUNE = ReportSection("this-finetune", "This fine-tune", 101, command_only=True)


def render_summary(path: Path) -> str:
    """The fine-tuned checkpoint, its base, and the loss and validation per epoch."""
    import pandas as pd
    summary = read_json(path)
    base = summary.get("provenance", {}).get("base_spec", "")
    head = (f'<p class="meta">{html.escape(checkpoint_label(summary.get("checkpoint", "")))}'
            + (f", fine-tuned from {html.escape(checkpoint_label(base))}" if base else "") + "</p>")
    epochs = pd.DataFrame(summary.get("history", {}).get("epochs", []))
    return head + (html_table(epochs) if len(epochs) else "")


def _holds(folder: Path, steps: set[str]) -> bool:
    return "finetune" in steps or FinetuneLayout(folder).summary.is_file()


def _shows(run: RunLayout) -> tuple[Path, ...]:
    tuned = FinetuneLayout(run.root)
    return run.manifest, tuned.gain_forgetting, tuned.before_after_metrics, tuned.summary


@dataclass(frozen=True)
class FinetuneInputs:
    """The checkpoint ``clipeval finetune`` starts from and the folder it writes."""

    checkpoint: str = field(metadata={"required": True, "help": "the checkpoint spec to fine-tune"})
    out: Path = field(metadata={"required": True,
                                "help": "output folder: checkpoint/, state/, gain_forgetting.csv..."})
    resume: bool = field(default=False, metadata={"help": "continue from the last state saved in --out"})
    overwrite: bool = field(default=False, metadata={
        "help": "discard an earlier run of other settings or data in --out (refused without it)"})


def _finetune(args: argparse.Namespace) -> None:
    from clipeval.jobs.finetune_run import format_differences, load_finetune_data, run_finetune

    inputs, config = options_from(args, FinetuneInputs), options_from(args, FinetuneConfig)
    pairs, held_out, forgetting = load_finetune_data(options_from(args, FinetuneData),
                                                     options_from(args, SourceOptions), config.seed)
    run = run_finetune(inputs.out, inputs.checkpoint, pairs, held_out, forgetting, config,
                       options_from(args, RetrievalOptions), resume=inputs.resume, overwrite=inputs.overwrite,
                       fetch=options_from(args, FetchOptions))
    history = run.result.history
    print(f"fine-tuned {inputs.checkpoint} ({config.mode}, {history['total_steps']} steps on "
          f"{history['n_train_images']} images, {history['trainable_parameters']:,} of "
          f"{history['total_parameters']:,} parameters trained) -> {run.result.spec}")
    print(f"after - before, paired bootstrap 95% CI:\n{format_differences(run.differences)}")
    print(f"-> {inputs.out} (gain_forgetting.csv, before_after_metrics.csv, finetune.json, train_pairs.csv)")


FINETUNE = Job("finetune", (), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).gain_forgetting, render_table),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).before_after_metrics, render_table),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).summary, render_summary)),
               CommandFolder("fine-tune", "python -m clipeval finetune", _holds, _shows,
                             "rerun the same `python -m clipeval finetune ...` command (with --resume it continues)",
                             lambda folder: (f"python -m clipeval score --pairs PAIRS --checkpoint SPEC --checkpoint "
                                             f"<the checkpoint in {FinetuneLayout(folder).summary}> "
                                             f"--out {folder}-scores",)),
               (Command("finetune", "fine-tune an hf:, open_clip: or dual: checkpoint on pairs (full, locked image "
                                    "tower or adapters), then measure its gain on a held-out set and what it forgot "
                                    "on a second set, with CIs",
                        (FinetuneInputs, FinetuneData, FinetuneConfig, SourceOptions, RetrievalOptions, FetchOptions),
                        _finetune,
                        example="python -m clipeval finetune --checkpoint dual:outputs/offline/models/dual "
                                "--pairs data/generated/scenes/pairs_train.csv --holdout 0.2 --mode lora --steps 100 "
                                "--hard-negatives --negative-kind relation --out outputs/finetune/lora",
                        takes_spec=True),))

FINETUNE_STUDY = Job("finetune_study", ("11_fine_tune",),
                     (Part(FINE_TUNING, lambda run: run.finetune_retrieval, render_table),
                      Part(FINE_TUNING, lambda run: run.finetune_hard_negatives, render_table),
                      Part(FINE_TUNING, lambda run: run.finetune_costs, render_table)))
