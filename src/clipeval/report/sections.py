"""The report's sections: every job's parts (:mod:`clipeval.jobs.registry`), gathered by section and rendered.

A file the run folder lacks leaves its section in place, saying what is missing and which notebook
writes it (or that the profile does not run that notebook); for a command's folder, only the files its
kind of run has are shown, and a missing one names the command that writes it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.jobs.job import Job, Part, ReportSection
from clipeval.jobs.registry import JOBS
from clipeval.layout import RunLayout
from clipeval.report.kinds import RunKind


@dataclass
class Section:
    """A titled section of the report: its HTML and what was missing."""

    key: str
    title: str
    body: str
    missing: list[str] = field(default_factory=list)


def report_sections() -> list[tuple[ReportSection, list[tuple[Job, Part]]]]:
    """Every section with the jobs' parts in it, in page order (a part's file shown once, by its first job)."""
    grouped: dict[ReportSection, list[tuple[Job, Part]]] = {}
    for job in JOBS.values():
        for part in job.parts:
            grouped.setdefault(part.section, []).append((job, part))
    return sorted(grouped.items(), key=lambda item: item[0].order)


def _missing_note(job: Job, part: Part, name: str, profile_notebooks: list[str] | None) -> str:
    writers = job.notebooks
    if profile_notebooks is not None and not set(writers) & set(profile_notebooks):
        return (f"{name}: not in this run; the profile runs no notebook that calls steps.{job.name}"
                + (f" ({', '.join(writers)})" if writers else ""))
    if part.absent:
        return f"{name}: not in this run; {part.absent}"
    where = f"notebook {', '.join(writers)}, make notebooks" if writers else "make notebooks"
    return f"{name} is missing: steps.{job.name} writes it ({where})"


def collect_section(run_dir: Path, section: ReportSection, parts: list[tuple[Job, Part]],
                    profile_notebooks: list[str] | None = None, kind: RunKind | None = None) -> Section:
    """One section from the run folder; a missing or unreadable file becomes a note, never an exception.

    With a command-line ``kind`` (:func:`~clipeval.report.kinds.detect_kind`), only the files that kind
    of run has are shown, and a missing one names the command that writes it.
    """
    run, shown = RunLayout(run_dir), {}
    for job, part in parts:
        path = part.locate(run)
        name = path.relative_to(run_dir).as_posix()
        if name not in shown and (kind is None or kind.is_profile or name in kind.files):
            shown[name] = (job, part, path)
    bodies, missing = [], []
    for name, (job, part, path) in shown.items():
        if not path.is_file():
            missing.append(f"{name} is missing: {kind.writers[name]}" if kind is not None and not kind.is_profile
                           else _missing_note(job, part, name, profile_notebooks))
            continue
        try:
            body = part.render(path)
        except (OSError, ValueError, KeyError, TypeError) as error:  # a damaged or older-format file
            missing.append(f"{name} could not be read: {type(error).__name__}: {error}")
            continue
        bodies.append(f'<h3><code>{html.escape(name)}</code></h3>{body}' if len(shown) > 1 else body)
    notes = "".join(f'<p class="missing">{html.escape(note)}</p>' for note in missing)
    return Section(section.key, section.title, notes + "".join(bodies), missing)


def collect_sections(run_dir: str | Path, profile_notebooks: list[str] | None = None,
                     kind: RunKind | None = None) -> list[Section]:
    """Every section from ``run_dir``; for a command-line ``kind`` only those with something to show."""
    if kind is None or kind.is_profile:
        return [collect_section(Path(run_dir), section, parts, profile_notebooks)
                for section, parts in report_sections() if not section.command_only]
    sections = [collect_section(Path(run_dir), section, parts, kind=kind) for section, parts in report_sections()]
    return [section for section in sections if section.body]
