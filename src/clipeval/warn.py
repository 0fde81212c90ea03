"""The one way a run warns: a ``warning: ...`` line on stderr, and the same warning as a record.

Checks (:mod:`clipeval.eval.caveats`) return :class:`RunWarning` values; the step that ran them passes them to
:func:`warn`, which prints each once and returns the records the step keeps in its stats and manifest entry, so
notebooks and the run report can show them too.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TextIO


@dataclass(frozen=True)
class RunWarning:
    """One warning about a run's results: its ``kind`` (``truncation``, ``unknown_vocabulary``,
    ``circular_evaluation``, ``trivial_metric``, ``hub``...), the sentence printed after ``warning:``, and the
    checkpoint it concerns, if one."""

    kind: str
    message: str
    checkpoint: str | None = None

    def record(self) -> dict:
        """The warning as a JSON-ready dict (``RunWarning(**record)`` gives it back)."""
        return asdict(self)


def warn(warnings: Iterable[RunWarning], stream: TextIO | None = None) -> list[dict]:
    """Print each warning as one ``warning: ...`` line (on stderr by default); return their records."""
    warnings = list(warnings)
    for warning in warnings:
        print(f"warning: {warning.message}", file=stream or sys.stderr)
    return [warning.record() for warning in warnings]
