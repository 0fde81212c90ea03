"""``curate``: rules applied to a scored run, into a curation folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.studies import render_curation_summary
from clipeval.jobs.tables import html_table
from clipeval.layout import CurationLayout, RunLayout

THIS_CURATION = ReportSection("curated", "This curation", 100, command_only=True)


def render_dropped(path: Path) -> str:
    """A curation's dropped rows by step and reason, with the range of their scores and the cut."""
    dropped = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "score" not in dropped:  # written before dropped.csv had the score and the cut
        dropped = dropped.assign(score=float("nan"), cut=float("nan"))
    table = dropped.groupby(["step", "reason"], sort=True, dropna=False).agg(
        rows=("row_id", "size"), lowest_score=("score", "min"), highest_score=("score", "max"), cut=("cut", "first"))
    return html_table(table.reset_index())


def _holds(folder: Path, steps: set[str]) -> bool:
    layout = CurationLayout(folder)
    return "curate" in steps or (layout.summary.is_file() and layout.kept_uids.is_file())


def _shows(run: RunLayout) -> tuple[Path, ...]:
    curated = CurationLayout(run.root)
    return (run.manifest, curated.summary, *((curated.dropped,) if curated.kept.is_file() else ()))


def _hints(folder: str) -> tuple[str, ...]:
    one_table = CurationLayout(folder).kept.is_file()
    return ("curated.csv holds the kept rows with every input column" if one_table
            else "kept_uids.parquet lists the kept samples; --write-filtered writes the filtered shards",
            "dropped.csv / decisions/ give each dropped row's step, reason, score and the cut")


CURATE = Job("curate", (), (Part(RUN, lambda run: run.manifest, render_manifest),
                            Part(THIS_CURATION, lambda run: CurationLayout(run.root).summary, render_curation_summary),
                            Part(THIS_CURATION, lambda run: CurationLayout(run.root).dropped, render_dropped)),
             CommandFolder("curation", "python -m clipeval curate", _holds, _shows,
                           "rerun the same `python -m clipeval curate ...` command", _hints))
