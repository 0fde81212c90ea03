"""Where the docs' measured numbers are read from, and how a number is written in them.

Shared by the tables (:mod:`measured`) and the phrases in running prose (:mod:`measured_prose`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipeval.paths import PROJECT_ROOT

BENCH_RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
# The offline run's files the docs quote; small enough to commit.
SNAPSHOT_FILES = ("score_summary.csv", "metrics.csv", "label_quality.csv", "label_metric_bias.csv")
MINUS = "\u2212"


@dataclass(frozen=True)
class Sources:
    """Where the renderers read: the benchmark results and the run snapshot."""

    bench_dir: Path = BENCH_RESULTS_DIR
    snapshot_dir: Path = BENCH_RESULTS_DIR / "offline"

    def bench(self, name: str) -> dict:
        """``bench/results/<name>.json``."""
        return json.loads((self.bench_dir / f"{name}.json").read_text())

    def table(self, name: str) -> pd.DataFrame:
        """A CSV of the run snapshot."""
        return pd.read_csv(self.snapshot_dir / name)


def num(value: float) -> str:
    """Three decimals, or two significant digits below 0.01 (chance levels, tiny gaps)."""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}".replace("-", MINUS)
    return f"{value:.3f}".replace("-", MINUS)


def signed(value: float, digits: int = 2) -> str:
    """``+0.32``, ``−0.20``, ``0.00``."""
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return text
    return ("+" if value > 0 else MINUS) + text


def exponent(value: float) -> str:
    """``2.2e-7`` (no zero padding of the exponent)."""
    mantissa, power = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(power)}"
