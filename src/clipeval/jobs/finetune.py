"""Fine-tuning: ``finetune`` (a checkpoint on pairs: its gain and forgetting) and notebook 11's study of the modes."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.tables import checkpoint_label, html_table, read_json, render_table
from clipeval.layout import FinetuneLayout, RunLayout

FINE_TUNING = ReportSection("finetune", "Fine-tuning", 85)
THIS_FINE_TUNE = ReportSection("this-finetune", "This fine-tune", 101, command_only=True)


def render_summary(path: Path) -> str:
    """The fine-tuned checkpoint, its base, and the loss and validation per epoch."""
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


FINETUNE = Job("finetune", (), (
    Part(RUN, lambda run: run.manifest, render_manifest),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).gain_forgetting, render_table),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).before_after_metrics, render_table),
    Part(THIS_FINE_TUNE, lambda run: FinetuneLayout(run.root).summary, render_summary)),
               CommandFolder("fine-tune", "python -m clipeval finetune", _holds, _shows,
                             "rerun the same `python -m clipeval finetune ...` command (with --resume it continues)",
                             lambda folder: (f"python -m clipeval score --pairs PAIRS --checkpoint SPEC --checkpoint "
                                             f"<the checkpoint in {FinetuneLayout(folder).summary}> "
                                             f"--out {folder}-scores",)))

FINETUNE_STUDY = Job("finetune_study", ("11_fine_tune",),
                     (Part(FINE_TUNING, lambda run: run.finetune_retrieval, render_table),
                      Part(FINE_TUNING, lambda run: run.finetune_hard_negatives, render_table),
                      Part(FINE_TUNING, lambda run: run.finetune_costs, render_table)))
