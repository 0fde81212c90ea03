"""``curate``: rules applied to a scored run, into a curation folder."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.curate.options import EXACT_LIMIT
from clipeval.embed.options import progress_option
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import RUN, render_manifest
from clipeval.jobs.studies import render_curation_summary
from clipeval.jobs.tables import html_table
from clipeval.layout import CurationLayout, RunLayout

THIS_CURATION = ReportSection("curated", "This curation", 100, command_only=True)


def render_dropped(path: Path) -> str:
    """A curation's dropped rows by step and reason, with the range of their scores and the cut."""
    import pandas as pd
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


_COLUMNS_RECORDED = "the scored run records its columns"


@dataclass(frozen=True)
class CurateInputs:
    """What ``clipeval curate`` reads, applies and writes."""

    scores: str = field(metadata={"required": True, "help": "a scored run folder (score --pairs or --shards)"})
    rule: tuple[str, ...] = field(metadata={
        "required": True, "repeat": True,
        "help": "applied in the order given, each to the rows the ones before kept: 'cosine[SPEC]>=0.3', "
                "'cosine[SPEC]>0.28', 'top:0.3[SPEC]' or 'top:30%%[SPEC]', 'percentile:70[SPEC]', 'basic', "
                "'preset:NAME[SPEC]' (laion400m, laion2b, datacomp-l14-30pct; 'preset:datacomp-basic'), or "
                "alternatives 'A | B'; without [SPEC], the run's primary checkpoint"})
    out: Path = field(metadata={"required": True, "help": "folder for summary.csv, decisions/, kept_uids.parquet "
                                                          "(and kept.csv, dropped.csv, curated.csv for a pairs table)"})
    exact_limit: int = field(default=EXACT_LIMIT, metadata={
        "help": "most rows for exact top-fraction/percentile cuts; above it a histogram sketch with its error bound"})
    write_filtered: bool = field(default=False, metadata={
        "help": "also write each input shard filtered to its kept samples, same format"})
    progress: bool = progress_option()
    caption_column: str | None = field(default=None, metadata={"retired": _COLUMNS_RECORDED})
    image_column: str | None = field(default=None, metadata={"retired": _COLUMNS_RECORDED})


def _curate(args: argparse.Namespace) -> None:
    from clipeval.curate.engine import ORDER_NOTE
    from clipeval.jobs import steps

    inputs = options_from(args, CurateInputs)
    result = steps.curate(inputs.scores, inputs.rule, inputs.out, inputs.exact_limit, inputs.write_filtered,
                          progress=inputs.progress)
    print(result.summary[["step", "rule", "rows_in", "kept", "dropped"]].to_string(index=False))
    if len(inputs.rule) > 1:
        print("note: rules apply in the order given: each step judges only the rows the steps before it kept, so a "
              "top fraction or percentile in another place keeps other rows")
    for step, note in zip(result.summary["step"], result.summary["note"]):  # the order note said once, above
        note = note.removeprefix(ORDER_NOTE).removeprefix("; ") if note else ""
        if note:
            print(f"note: step {step}: {note}")
    print(f"kept {result.kept} of {result.rows} rows ({'exact' if result.exact else 'sketch'} cuts) -> {inputs.out}")


CURATE = Job("curate", (), (Part(RUN, lambda run: run.manifest, render_manifest),
                            Part(THIS_CURATION, lambda run: CurationLayout(run.root).summary, render_curation_summary),
                            Part(THIS_CURATION, lambda run: CurationLayout(run.root).dropped, render_dropped)),
             CommandFolder("curation", "python -m clipeval curate", _holds, _shows,
                           "rerun the same `python -m clipeval curate ...` command", _hints),
             (Command("curate", "keep the pairs rules select by their scores (curation), over a scored run's shards "
                                "(one or many)", (CurateInputs,), _curate,
                      example="python -m clipeval curate --scores outputs/my-run "
                              "--rule 'cosine[dual:outputs/offline/models/dual]>=0.3' --out outputs/my-run/curated",
                      deprecated=(("curate-shards", "curate"),)),))
