"""A job written outside the package, as a user would: options, a run that writes its file and manifest entry,
a report section and a command. Registered with one line (``register_job(TOY)``)."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection
from clipeval.jobs.manifest import update_manifest
from clipeval.jobs.tables import html_table
from clipeval.layout import RunLayout

SECTION = ReportSection("toy", "Toy counts", 110, command_only=True)


def _file(run: RunLayout) -> Path:
    return run.root / "toy.csv"


@dataclass(frozen=True)
class ToyOptions:
    """How many rows the toy job writes, and where."""

    out: Path = field(metadata={"required": True, "help": "the toy's folder"})
    rows: int = field(default=3, metadata={"help": "rows to write"})


def write_toy(options: ToyOptions) -> Path:
    """The toy job's run: its one file and its manifest entry."""
    run = RunLayout(options.out)
    run.root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": range(options.rows)}).to_csv(_file(run), index=False)
    update_manifest(run.manifest, "toy", {"rows": options.rows}, [], [])
    return _file(run)


def _command(args: argparse.Namespace) -> None:
    print(f"wrote {write_toy(options_from(args, ToyOptions))}")


def _count_rows(path: Path) -> str:
    return html_table(pd.DataFrame({"rows": [len(pd.read_csv(path))]}))


TOY = Job("toy", (), (Part(SECTION, _file, _count_rows),),
          CommandFolder("toy", "python -m clipeval toy", lambda folder, steps: "toy" in steps,
                        lambda run: (_file(run),), "rerun `python -m clipeval toy ...`"),
          (Command("toy", "write a toy table (a job from the tests)", (ToyOptions,), _command,
                   example="python -m clipeval toy --out outputs/toy --rows 7"),))
