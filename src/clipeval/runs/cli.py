"""Command line: ``python -m clipeval <command> ...`` (also installed as ``clipeval``).

Each job's commands come from the job registry (:mod:`clipeval.jobs.registry`); this module adds the
two that read a profile (``run-notebooks``, ``report``). Expected failures (a bad checkpoint spec, a
missing column, no network) print one ``error:`` line and exit with 2; Ctrl-C prints one line saying
whether a rerun resumes, and exits with 130; a closed output pipe exits quietly with 141.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.jobs.flags import add_options, options_from
from clipeval.jobs.job import Command
from clipeval.jobs.registry import job_commands
from clipeval.models.registry import quiet_model_loads
from clipeval.runs.cli_help import HelpfulParser, command_epilog, top_level_epilog
from clipeval.runs.errors import EXPECTED_ERRORS

_PROFILE = "name in params/ or a YAML path"


@dataclass(frozen=True)
class NotebookRun:
    """The profile ``run-notebooks`` executes, and checkpoints that replace its own."""

    profile: str = field(default="offline", metadata={"help": _PROFILE})
    checkpoints: str = field(default="", metadata={"help": "space-separated specs overriding the profile's"})


@dataclass(frozen=True)
class ReportInputs:
    """The run ``report`` pages: a profile's run folder, or any command's folder."""

    profile: str = field(default="offline", metadata={"help": _PROFILE})
    run_dir: Path | None = field(default=None, metadata={
        "help": "run folder (default: the profile's run_dir); a command's --out folder is reported as that command's"})


def _run_notebooks(args: argparse.Namespace) -> None:
    from clipeval.runs.notebooks import run_notebooks

    run = options_from(args, NotebookRun)
    for path in run_notebooks(run.profile, run.checkpoints.split() if run.checkpoints else None):
        print(f"executed {path}")


def _report(args: argparse.Namespace) -> int:
    from clipeval.report.build import build_profile_report, build_run_report
    from clipeval.report.kinds import detect_kind

    inputs = options_from(args, ReportInputs)
    folder = inputs.run_dir if inputs.run_dir is not None and inputs.run_dir.is_dir() else None
    # a command's folder (score, retrieve, curate...) is reported as that kind of run, not as a profile
    kind = detect_kind(folder) if folder is not None else None
    by_kind = folder is not None and (kind is None or not kind.is_profile)
    report = build_run_report(folder) if by_kind else build_profile_report(inputs.profile, inputs.run_dir)
    missing = [note for section in report.sections for note in section.missing]
    print(f"report -> {report.index}: {report.kind.describe()}; {len(report.figures)} figures, "
          f"{len(report.notebooks)} notebooks, {len(missing)} file(s) missing")
    for note in missing if by_kind else []:
        print(f"  {note}")
    for hint in report.kind.hints if by_kind else []:
        print(f"next: {hint}")
    for page in report.failed_notebooks:
        print(f"warning: {page.name} holds an error output: {'; '.join(page.errors)}", file=sys.stderr)
    return 1 if report.failed_notebooks else 0


PROFILE_COMMANDS = (
    Command("run-notebooks", "execute a profile's notebooks with papermill", (NotebookRun,), _run_notebooks,
            example="python -m clipeval run-notebooks --profile offline "
                    "--checkpoints 'dual:outputs/offline/models/dual baseline:bert-resnet50-random'"),
    Command("report", "write <run_dir>/report/index.html: the run's tables, figures and notebooks as one "
                      "self-contained page", (ReportInputs,), _report,
            example="python -m clipeval report --profile offline"),
)


def all_commands() -> list[Command]:
    """Every command: the registered jobs' and the profile commands."""
    return [*job_commands(), *PROFILE_COMMANDS]


def _deprecated(command: Command, old: str, new: str):
    def run(args: argparse.Namespace) -> int | None:
        print(f"warning: {old} is deprecated and will be removed in the next release; use {new}", file=sys.stderr)
        return command.run(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    commands = all_commands()
    parser = HelpfulParser(prog="clipeval", description=__doc__.splitlines()[0],
                           epilog=top_level_epilog(commands[0].example))
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        names = [(command.name, command.help, command.run)]
        names += [(old, f"deprecated: {new}", _deprecated(command, old, new)) for old, new in command.deprecated]
        for name, helps, run in names:
            sub = subparsers.add_parser(name, help=helps, epilog=command_epilog(command, command in PROFILE_COMMANDS))
            for options in command.options:
                add_options(sub, options)
            sub.set_defaults(handler=run, interrupted=command.on_interrupt)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code (2: an expected error, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    from clipeval.embed.cache import announcing_location  # numpy: after the parser has answered --help

    try:
        # quiet means quiet: the model libraries' bars too (transformers' "Loading weights")
        quiet = getattr(args, "progress", None) is False
        with quiet_model_loads() if quiet else contextlib.nullcontext(), announcing_location():
            status = args.handler(args)
        sys.stdout.flush()  # inside the try: a reader gone before the last write is met here, not at exit
    except BrokenPipeError:
        # the reader of the output went away (`clipeval search IX "a dog" --json | head`): stop quietly, as
        # Unix tools do, and keep Python's exit-time flush from reporting the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE's status
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; {args.interrupted}" if args.interrupted else "\ninterrupted", file=sys.stderr)
        return 130
    return status or 0
