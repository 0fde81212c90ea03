"""Check an offline run against the docs' snapshot as ``docs/reproducibility.md`` says to expect.

On the machine that made the snapshot (same CPU, thread count and pins) every table is byte-identical.
On another machine the models' float arithmetic differs in its last bits, so the tables differ too, but
only this far: the rows (their checkpoint, dataset, direction, k, source, metric), the counts
(``n_*``, ``*_count``) and the chance levels (``*_chance``) are identical, since no model computes them,
and every estimate that has a bootstrap CI (``X`` beside ``X_ci_low`` and ``X_ci_high``) lies inside the
other run's 95% CI. Numbers without a CI are reported with their largest change and judged by nothing.

    .venv/bin/python bench/reproducibility.py outputs/offline     # exit 1 when the run breaks the statement
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from measured_sources import BENCH_RESULTS_DIR, SNAPSHOT_FILES


@dataclass
class TableCheck:
    """One snapshot table against the run's: what held, what did not."""

    name: str
    identical: bool = False
    broken: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.identical:
            return f"{self.name}: byte-identical"
        verdict = "NOT as expected: " + "; ".join(self.broken) if self.broken else "as expected on another machine"
        return f"{self.name}: {verdict}" + "".join(f"\n  {note}" for note in self.notes)


def _row_keys(table: pd.DataFrame) -> list[str]:
    """The columns that name a row: the text and flag columns, and the cut-off ``k``."""
    return [column for column in table.columns
            if column == "k" or not pd.api.types.is_numeric_dtype(table[column]) or table[column].dtype == bool]


def _model_free(column: str) -> bool:
    """Counts and chance levels: numbers no model computes."""
    return column.startswith("n_") or column.endswith(("_count", "_chance"))


def _with_ci(table: pd.DataFrame) -> list[str]:
    return [column for column in table.columns
            if f"{column}_ci_low" in table.columns and f"{column}_ci_high" in table.columns]


def _outside_ci(estimates: pd.DataFrame, intervals: pd.DataFrame, column: str) -> pd.Series:
    low, high = intervals[f"{column}_ci_low"], intervals[f"{column}_ci_high"]
    return (estimates[column] < low) | (estimates[column] > high)


def check_table(name: str, run: Path, snapshot: Path) -> TableCheck:
    """Compare ``run/name`` with ``snapshot/name`` (see the module docstring for what is expected)."""
    check = TableCheck(name)
    if (run / name).read_bytes() == (snapshot / name).read_bytes():
        check.identical = True
        return check
    ours, theirs = pd.read_csv(run / name), pd.read_csv(snapshot / name)
    only = [f"{side} only: {columns}" for side, columns in (
        ("columns in the run", [c for c in ours if c not in theirs]),
        ("columns in the snapshot", [c for c in theirs if c not in ours])) if columns]
    check.notes += only
    shared = [column for column in theirs.columns if column in ours.columns]
    ours, theirs = ours[shared], theirs[shared]
    keys = _row_keys(theirs)
    if len(ours) != len(theirs) or not ours[keys].equals(theirs[keys]):
        check.broken.append(f"the rows differ (by {', '.join(keys)})")
        return check
    for column in shared:
        if column in keys or ours[column].equals(theirs[column]):
            continue
        if _model_free(column):
            check.broken.append(f"{column} differs (a count or chance level: no model computes it)")
        elif column in _with_ci(theirs):
            outside = _outside_ci(ours, theirs, column) | _outside_ci(theirs, ours, column)
            if outside.any():
                check.broken.append(f"{column} outside the other run's CI in {int(outside.sum())} row(s)")
        elif not column.endswith(("_ci_low", "_ci_high")) and pd.api.types.is_numeric_dtype(theirs[column]):
            change = (ours[column] - theirs[column]).abs()
            check.notes.append(f"{column}: largest change {change.max():.3g} (no CI)")
    return check


def check_run(run_dir: str | Path, snapshot_dir: str | Path = BENCH_RESULTS_DIR / "offline") -> list[TableCheck]:
    """Every snapshot table of ``run_dir`` against the committed snapshot.

    Raises:
        FileNotFoundError: the run lacks a snapshot table.
    """
    run_dir, snapshot_dir = Path(run_dir), Path(snapshot_dir)
    missing = [name for name in SNAPSHOT_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {', '.join(missing)}: run the offline notebooks first "
                                "(make reproduce)")
    return [check_table(name, run_dir, snapshot_dir) for name in SNAPSHOT_FILES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the offline run folder, e.g. outputs/offline")
    args = parser.parse_args(argv)
    try:
        checks = check_run(args.run_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for check in checks:
        print(check.summary())
    return 1 if any(check.broken for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
