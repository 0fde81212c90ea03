"""A job's declaration: its command, the files it writes and how the report recognises, describes and shows them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.layout import RunLayout


@dataclass(frozen=True)
class ReportSection:
    """A titled section of the run report; jobs add their parts to it. ``order`` places it on the page;
    a ``command_only`` section is shown for a command's folder, never in a profile's report."""

    key: str
    title: str
    order: int
    command_only: bool = False


@dataclass(frozen=True)
class Part:
    """One file a job writes, in a report section.

    Attributes:
        section: where the report shows it.
        locate: the file, from the run folder's layout (its name is typed only there).
        render: the file -> inert HTML.
        absent: why the file may be missing without anything having gone wrong (shown instead of "missing").
    """

    section: ReportSection
    locate: Callable[[RunLayout], Path]
    render: Callable[[Path], str]
    absent: str = ""


@dataclass(frozen=True)
class CommandFolder:
    """How the report recognises a folder a command wrote, describes it, and what it shows of it.

    Attributes:
        name: the kind of run (``score``, ``fine-tune``...).
        made_by: the command that writes such a folder.
        holds: ``(folder, steps in its manifest) -> bool``: the folder holds this job's output.
        shows: the files the report shows (those of the job's parts it locates), relative to the folder.
        rerun: the note for one of its files that is missing.
        hints: ``folder -> next steps`` that fit it.
        figures: whether such a folder has ``figures/``.
    """

    name: str
    made_by: str
    holds: Callable[[Path, set[str]], bool]
    shows: Callable[[RunLayout], tuple[Path, ...]]
    rerun: str
    hints: Callable[[str], tuple[str, ...]] = lambda folder: ()
    figures: bool = False


@dataclass(frozen=True)
class RunTarget:
    """The checkpoints a command runs and the folder it writes."""

    checkpoint: tuple[str, ...] = field(metadata={
        "required": True, "repeat": True, "help": "checkpoint spec (repeat for several; the first is primary)"})
    out: Path = field(metadata={"required": True, "help": "the run folder"})


@dataclass(frozen=True)
class Command:
    """A job's command line, ``clipeval NAME``.

    Attributes:
        name: the command.
        help: one line for ``clipeval --help``.
        options: the option dataclasses whose fields are its flags and arguments (:mod:`clipeval.jobs.flags`).
        run: parsed flags -> exit status (``None``: 0); it imports what it needs when it runs, so that
            ``--help`` stays fast.
        example: one use, as a user types it (shown in its ``--help``; the tests parse it).
        takes_spec: its ``--checkpoint`` takes a spec (its ``--help`` explains the grammar).
        on_interrupt: what a rerun after Ctrl-C keeps (empty: it starts again).
        deprecated: old command names that still run it, each with the spelling that replaced it.
    """

    name: str
    help: str
    options: tuple[type, ...]
    run: Callable[[argparse.Namespace], int | None]
    example: str = ""
    takes_spec: bool = False
    on_interrupt: str = ""
    deprecated: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Job:
    """One job (a step of a notebook or a command): its manifest entry's name, who runs it, what it shows.

    Attributes:
        name: the manifest step it writes (``manifest.json``'s ``steps``) and its name in the registry.
        notebooks: the notebooks that run it (checked against their code by the tests).
        parts: the files it writes that the report shows.
        folder: for a command, how the report knows and describes its ``--out`` folder.
        commands: its command lines.
    """

    name: str
    notebooks: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()
    folder: CommandFolder | None = None
    commands: tuple[Command, ...] = ()
