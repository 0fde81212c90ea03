"""What kind of run a folder holds, read from its files and the jobs' declarations (:mod:`clipeval.jobs.registry`).

``clipeval report --run-dir DIR`` works on any folder a clipeval command wrote, or on a profile's run. For a
command's folder the report lists only the files its job shows and, for one that is missing, the command that
writes it, so a command-line run is never asked for ``make notebooks``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from clipeval.jobs.registry import JOBS
from clipeval.layout import RunLayout


@dataclass(frozen=True)
class RunKind:
    """One kind of run: its name, what made it, the files it has, and the commands that fill it in.

    Attributes:
        name: ``profile`` or a command folder's kind (joined by ``+`` when several commands wrote into one folder).
        made_by: the command or make target that writes such a folder.
        files: the files (relative to the folder) the report shows; None for a profile run (all).
        writers: for each file, the command that writes it (the note when it is missing).
        hints: next steps that fit this kind of run.
        figures: whether the kind of run writes ``figures/``.
    """

    name: str
    made_by: str
    files: tuple[str, ...] | None
    writers: dict[str, str]
    hints: tuple[str, ...]
    figures: bool

    @property
    def is_profile(self) -> bool:
        return self.files is None

    def describe(self) -> str:
        """One line: ``a score run (python -m clipeval score --pairs ...)``."""
        return f"a {self.name} run ({self.made_by})" if self.name != "curation" else f"a curation ({self.made_by})"


PROFILE = RunKind("profile", "make notebooks / python -m clipeval run-notebooks --profile NAME", None, {},
                  ("make report PROFILE=<profile> rebuilds this page after the notebooks ran again",), True)


def _manifest_steps(run: RunLayout) -> set[str]:
    try:
        return set(json.loads(run.manifest.read_text()).get("steps", {})) if run.manifest.is_file() else set()
    except (OSError, ValueError, AttributeError):
        return set()


def detect_kind(run_dir) -> RunKind | None:
    """The kind of run ``run_dir`` holds; None when it holds nothing a clipeval job writes.

    A folder with executed notebooks, or whose manifest names a job no command runs, is a profile run.
    Otherwise every command whose job's folder declaration (:class:`~clipeval.jobs.job.CommandFolder`) finds
    its output there adds its kind.
    """
    run = RunLayout(run_dir)
    steps = _manifest_steps(run)
    commands = {name for name, job in JOBS.items() if job.folder is not None}
    if any(run.notebooks.glob("*.ipynb")) or steps - commands:
        return PROFILE
    kinds = []
    for job in JOBS.values():
        if job.folder is not None and job.folder.holds(run.root, steps):
            files = tuple(path.relative_to(run.root).as_posix() for path in job.folder.shows(run))
            kinds.append(RunKind(job.folder.name, job.folder.made_by, files, dict.fromkeys(files, job.folder.rerun),
                                 job.folder.hints(str(run.root)), job.folder.figures))
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds[0]
    files = tuple(dict.fromkeys(name for kind in kinds for name in kind.files))
    return RunKind(" + ".join(kind.name for kind in kinds), "; ".join(kind.made_by for kind in kinds), files,
                   {name: note for kind in kinds for name, note in kind.writers.items()},
                   tuple(hint for kind in kinds for hint in kind.hints), any(kind.figures for kind in kinds))


def folder_kinds() -> str:
    """What each command writes that the report shows, for the error on a folder holding none of it."""
    here = RunLayout(".")
    return "; ".join(f"{job.folder.made_by} ({', '.join(path.name for path in job.folder.shows(here))})"
                     for job in JOBS.values() if job.folder is not None)
