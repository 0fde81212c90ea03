"""What kind of run a folder holds, read from its files, and what that kind of run is expected to have.

``clipeval report --run-dir DIR`` works on any folder a clipeval command wrote: a profile's run
(the notebooks), a ``score`` run (one table, or shards), a ``retrieve`` run, a ``curate`` folder,
or several of the command-line steps sharing one ``--out``. The report lists only the files the
kind of run writes and, for one that is missing, the command that writes it, so a command-line
run is never asked for ``make notebooks``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from clipeval.layout import CurationLayout, RunLayout

# the steps the command line runs; a manifest naming any other step was written by the notebooks
COMMAND_STEPS = frozenset({"score", "score_shards", "retrieve", "curate"})


@dataclass(frozen=True)
class RunKind:
    """One kind of run: its name, what made it, the files it has, and the commands that fill it in.

    Attributes:
        name: ``profile``, ``score``, ``sharded score``, ``retrieve`` or ``curation`` (joined by ``+``
            when several command-line steps wrote into one folder).
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

_RERUN_SCORE = "rerun the same `python -m clipeval score --pairs ...` command (it resumes and writes it)"


def _score(folder: str) -> RunKind:
    return RunKind("score", "python -m clipeval score --pairs", ("manifest.json", "results.csv", "score_summary.csv",
                                                                 "stats.json"),
                   {"manifest.json": _RERUN_SCORE, "results.csv": _RERUN_SCORE, "score_summary.csv": _RERUN_SCORE,
                    "stats.json": _RERUN_SCORE},
                   (f"python -m clipeval curate --scores {folder} --rule 'top:30%' --out {folder}/curated",
                    f"python -m clipeval retrieve --pairs PAIRS --checkpoint SPEC --out {folder}-retrieval"), True)


def _sharded(folder: str) -> RunKind:
    rerun = "rerun the same `python -m clipeval score --shards ...` command (it scores only what is missing)"
    return RunKind("sharded score", "python -m clipeval score --shards", ("manifest.json", "stats.json"),
                   {"manifest.json": rerun, "stats.json": rerun},
                   (f"python -m clipeval curate --scores {folder} --rule 'top:30%' --out {folder}/curated",), False)


def _retrieve(folder: str) -> RunKind:
    rerun = "rerun the same `python -m clipeval retrieve ...` command"
    return RunKind("retrieve", "python -m clipeval retrieve", ("manifest.json", "metrics.csv",
                                                               "retrieval_stats.json"),
                   {"manifest.json": rerun, "metrics.csv": rerun, "retrieval_stats.json": rerun},
                   ("retrieval_ranks.csv holds every query's rank: sort it to read the worst queries",), False)


def _curation(folder: str, one_table: bool) -> RunKind:
    rerun = "rerun the same `python -m clipeval curate ...` command"
    files = ("manifest.json", "summary.csv", *(("dropped.csv",) if one_table else ()))
    return RunKind("curation", "python -m clipeval curate", files, dict.fromkeys(files, rerun),
                   ("curated.csv holds the kept rows with every input column" if one_table
                    else "kept_uids.parquet lists the kept samples; --write-filtered writes the filtered shards",
                    "dropped.csv / decisions/ give each dropped row's step, reason, score and the cut"), False)


def _manifest_steps(run: RunLayout) -> set[str]:
    try:
        return set(json.loads(run.manifest.read_text()).get("steps", {})) if run.manifest.is_file() else set()
    except (OSError, ValueError):
        return set()


def detect_kind(run_dir) -> RunKind | None:
    """The kind of run ``run_dir`` holds, from its files; None when it holds none a clipeval step writes.

    A folder with executed notebooks, or whose manifest names a step only the notebooks run, is a
    profile run. Otherwise each command-line step found adds its kind: ``score --pairs`` (``run.json``
    and ``results.csv``), ``score --shards`` (``run.json`` without ``results.csv``), ``retrieve``
    (``metrics.csv``), ``curate`` (``summary.csv`` and ``kept_uids.parquet``).
    """
    run, curated = RunLayout(run_dir), CurationLayout(run_dir)
    folder = str(run.root)
    steps = _manifest_steps(run)
    if any(run.notebooks.glob("*.ipynb")) or steps - COMMAND_STEPS:
        return PROFILE
    kinds = []
    if run.fingerprint.is_file() or "score" in steps or "score_shards" in steps:
        kinds.append(_score(folder) if run.results.is_file() or "score" in steps else _sharded(folder))
    if run.metrics.is_file() or "retrieve" in steps:
        kinds.append(_retrieve(folder))
    if (curated.summary.is_file() and curated.kept_uids.is_file()) or "curate" in steps:
        kinds.append(_curation(folder, curated.kept.is_file()))
    if not kinds:
        return None
    if len(kinds) == 1:
        return kinds[0]
    files = tuple(dict.fromkeys(name for kind in kinds for name in kind.files))
    return RunKind(" + ".join(kind.name for kind in kinds), "; ".join(kind.made_by for kind in kinds), files,
                   {name: note for kind in kinds for name, note in kind.writers.items()},
                   tuple(hint for kind in kinds for hint in kind.hints), any(kind.figures for kind in kinds))
