"""Curation over scored shards: the rules of :mod:`clipeval.eval.curation`, streamed shard by shard.

Row-wise rules (thresholds, the basic filter, and/or of them) need one streaming pass. A
top-fraction or percentile rule needs the score distribution of the rows it judges, over all
shards: one more pass collects it, and the rule becomes a row-wise cut.

* **Exact** when the run has at most ``exact_limit`` rows: the scores are gathered and the cut is
  what :func:`~clipeval.eval.curation.curate` computes on one table, ties at a top-fraction cut
  broken by input order (shard order, then row order), so both keep the same rows.
* **Sketch** above that: a mergeable fixed-width histogram over the score's range
  (:class:`ScoreHistogram`, 2^20 bins: about 1.9e-6 wide for the cosine). The cut is a bin edge;
  the error bound is one bin width in score, and at most the cut bin's rows in count (both
  written in ``summary.csv``).

A final pass writes every row's decision, the kept uids and, on request, each input shard
filtered to its kept samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipeval.atomic import atomic_path, write_csv
from clipeval.data.shards import write_filtered_shard
from clipeval.eval.curation import Combination, Percentile, Rule, Threshold, TopFraction, score_column
from clipeval.progress import progress_bar

EXACT_LIMIT = 50_000_000  # rows whose scores are gathered in memory (8 bytes each) for an exact cut
SKETCH_BINS = 2**20
SCORE_RANGES = {"cosine": (-1.0, 1.0), "clip_score_100": (0.0, 100.0), "clip_score_2_5": (0.0, 2.5)}


@dataclass
class ScoreHistogram:
    """A mergeable fixed-width histogram of a bounded score: the sketch for quantiles past memory.

    Attributes:
        low, high: the score's range (values outside are clipped into the end bins).
        counts: rows per bin.
    """

    low: float
    high: float
    counts: np.ndarray = field(default_factory=lambda: np.zeros(SKETCH_BINS, dtype=np.int64))

    @property
    def width(self) -> float:
        return (self.high - self.low) / len(self.counts)

    def bins(self, values: np.ndarray) -> np.ndarray:
        index = np.floor((np.asarray(values, dtype=np.float64) - self.low) / self.width)
        return np.clip(index, 0, len(self.counts) - 1).astype(np.int64)

    def add(self, values: np.ndarray) -> None:
        self.counts += np.bincount(self.bins(values), minlength=len(self.counts))

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        if (other.low, other.high, len(other.counts)) != (self.low, self.high, len(self.counts)):
            raise ValueError("only histograms over the same range and bins merge")
        return ScoreHistogram(self.low, self.high, self.counts + other.counts)

    def bin_of_rank_from_top(self, rank: int) -> int:
        """The bin holding the ``rank``-th highest value (1-based)."""
        from_top = np.cumsum(self.counts[::-1])
        return len(self.counts) - 1 - int(np.searchsorted(from_top, rank))

    def edge(self, bin_index: int) -> float:
        return self.low + bin_index * self.width


@dataclass
class _TopCut(Rule):
    """A resolved exact top fraction: values above ``cut``, and the first ``ties`` rows equal to it."""

    source: TopFraction
    cut: float
    ties: int
    _left: int = 0

    def checkpoints(self):
        return self.source.checkpoints()

    def describe(self):
        return self.source.describe()

    def reset(self):
        self._left = self.ties

    def keep(self, table, rows):
        values = table.loc[rows, score_column(self.source.checkpoint, self.source.score)].to_numpy()
        tied = np.flatnonzero(values == self.cut)[:self._left]
        self._left -= len(tied)
        mask = values > self.cut
        mask[tied] = True
        return rows[mask], ""


@dataclass
class _BinCut(Rule):
    """A resolved sketch cut: rows whose value falls in bin ``first_bin`` of ``histogram`` or above."""

    source: Rule
    histogram: ScoreHistogram
    first_bin: int

    def checkpoints(self):
        return self.source.checkpoints()

    def describe(self):
        return self.source.describe()

    def keep(self, table, rows):
        values = table.loc[rows, score_column(self.source.checkpoint, self.source.score)].to_numpy()
        return rows[self.histogram.bins(values) >= self.first_bin], ""


def _is_global(rule: Rule) -> bool:
    return isinstance(rule, (TopFraction, Percentile))


def _global_leaves(rule: Rule) -> list[Rule]:
    if isinstance(rule, Combination):
        return [leaf for part in rule.rules for leaf in _global_leaves(part)]
    return [rule] if _is_global(rule) else []


def _substitute(rule: Rule, resolved: dict[int, Rule]) -> Rule:
    if isinstance(rule, Combination):
        return replace(rule, rules=[_substitute(part, resolved) for part in rule.rules])
    return resolved.get(id(rule), rule)


def _reset(rule: Rule) -> None:
    if isinstance(rule, Combination):
        for part in rule.rules:
            _reset(part)
    elif isinstance(rule, _TopCut):
        rule.reset()


def _resolve_exact(leaf: Rule, values: np.ndarray) -> tuple[Rule, str]:
    if isinstance(leaf, Percentile):
        cut = float(np.percentile(values, leaf.percentile)) if len(values) else math.inf
        return Threshold(leaf.checkpoint, cut, score=leaf.score), f"exact cut {cut:.6f}"
    count = math.ceil(leaf.fraction * len(values))
    if count == 0:
        return _TopCut(leaf, math.inf, 0), "exact: nothing to keep"
    cut = float(-np.sort(-values, kind="stable")[count - 1])
    above = int((values > cut).sum())
    tied = int((values == cut).sum())
    note = f"exact cut {cut:.6f}"
    if tied > count - above:
        note += f"; {tied - (count - above)} rows with the cut score dropped by input order"
    return _TopCut(leaf, cut, count - above), note


def _resolve_sketch(leaf: Rule, histogram: ScoreHistogram) -> tuple[Rule, str]:
    total = int(histogram.counts.sum())
    if isinstance(leaf, Percentile):
        rank_from_top = total - math.floor(leaf.percentile / 100 * (total - 1))
    else:
        rank_from_top = math.ceil(leaf.fraction * total)
    if rank_from_top <= 0 or total == 0:
        return _BinCut(leaf, histogram, len(histogram.counts)), "sketch: nothing to keep"
    first = histogram.bin_of_rank_from_top(rank_from_top)
    in_bin = int(histogram.counts[first])
    return _BinCut(leaf, histogram, first), (
        f"sketch cut {histogram.edge(first):.6f} (error bound: {histogram.width:.2g} in score, up to {in_bin} "
        f"rows in the cut bin)")


def _status_ok(table: pd.DataFrame, checkpoints: list[str]) -> tuple[pd.Index, pd.Series]:
    """The rows ok under every checkpoint the rules use, and ``status:<code>`` for each other row."""
    rows, reasons = table.index, []
    for spec in checkpoints:
        column = score_column(spec, "status")
        if column not in table:
            raise ValueError(f"the scored shards have no scores for {spec}; they have "
                             f"{[c[len('status['):-1] for c in table.columns if c.startswith('status[')]}")
        bad = table.loc[rows, column].ne("ok").to_numpy()
        reasons.append("status:" + table.loc[rows[bad], column].astype(str))
        rows = rows[~bad]
    return rows, pd.concat(reasons) if reasons else pd.Series(dtype=str)


@dataclass
class ShardCuration:
    """The outcome of :func:`curate_scored_shards`.

    Attributes:
        summary: one row per step: ``step``, ``rule``, ``rows_in``, ``kept``, ``dropped``, ``note``.
        kept: rows kept.
        rows: rows judged.
        exact: whether every global cut was exact.
        out_dir: where the files are.
    """

    summary: pd.DataFrame
    kept: int
    rows: int
    exact: bool
    out_dir: Path


def _read(path: Path, checkpoints: list[str], caption_column: str) -> pd.DataFrame:
    """What the rules read of a scored shard: ids, caption, image size and the rules' checkpoints' columns."""
    wanted = {"uid", "row", caption_column, "image_width", "image_height"}
    names = pq.read_schema(path).names
    table = pd.read_parquet(path, columns=[name for name in names if name in wanted
                                           or any(name.endswith(f"[{spec}]") for spec in checkpoints)])
    if caption_column != "caption" and caption_column in table and "caption" not in table:
        table = table.rename(columns={caption_column: "caption"})
    return table


def curate_scored_shards(paths: list[Path], rules: list[Rule], out_dir: str | Path,
                         exact_limit: int = EXACT_LIMIT, write_filtered: bool = False,
                         caption_column: str = "caption", progress: bool = True) -> ShardCuration:
    """Apply ``rules`` in order over scored shards; kept + dropped = every row (see the module docstring).

    Args:
        paths: the scored shards' parquet files, in input order.
        rules: the curation rules.
        out_dir: the output folder.
        exact_limit: most rows for an exact top-fraction / percentile cut; above it, the sketch.
        write_filtered: also write each input shard filtered to its kept samples (``filtered/``).
        caption_column: the shards' caption column (the basic filter reads it).
        progress: progress bars over the passes.

    Returns:
        The :class:`ShardCuration`.

    Raises:
        ValueError: no scored shard, or a rule names a checkpoint the shards have no scores for.
    """
    if not paths:
        raise ValueError("no scored shard to curate: score the shards first (clipeval score-shards)")
    out_dir = Path(out_dir)
    checkpoints = list(dict.fromkeys(spec for rule in rules for spec in rule.checkpoints()))
    total = sum(pq.read_metadata(path).num_rows for path in paths)
    exact = total <= exact_limit
    resolved: list[Rule] = []
    notes: list[str] = []
    for number, rule in enumerate(rules, start=1):
        leaves = _global_leaves(rule)
        if not leaves:
            resolved.append(rule)
            notes.append("")
            continue
        gathered = _gather(paths, resolved, checkpoints, leaves, exact, caption_column, progress, number)
        made = [(_resolve_exact(leaf, values) if exact else _resolve_sketch(leaf, values))
                for leaf, values in zip(leaves, gathered)]
        resolved.append(_substitute(rule, {id(leaf): new for leaf, (new, _) in zip(leaves, made)}))
        notes.append("; ".join(note for _, note in made))
    summary, kept = _final_pass(paths, rules, resolved, notes, checkpoints, out_dir, write_filtered,
                                caption_column, progress)
    write_csv(out_dir / "summary.csv", summary)
    return ShardCuration(summary, kept, total, exact, out_dir)


def _rows_in(table: pd.DataFrame, resolved: list[Rule], checkpoints: list[str]) -> pd.Index:
    rows = _status_ok(table, checkpoints)[0]
    for rule in resolved:
        rows = _keep(rule, table, rows)
    return rows


def _keep(rule: Rule, table: pd.DataFrame, rows: pd.Index) -> pd.Index:
    """``rule.keep``; no rows (an empty shard, or all dropped) stay none whatever the columns' types."""
    return rule.keep(table, rows)[0] if len(rows) else rows


def _gather(paths, resolved, checkpoints, leaves, exact, caption_column, progress, number) -> list:
    for rule in resolved:
        _reset(rule)
    if exact:
        parts: list[list[np.ndarray]] = [[] for _ in leaves]
    else:
        parts = [ScoreHistogram(*SCORE_RANGES[leaf.score]) for leaf in leaves]
    for path in progress_bar(paths, unit="shard", desc=f"curation step {number}: score distribution",
                             disable=not progress):
        table = _read(path, checkpoints, caption_column)
        rows = _rows_in(table, resolved, checkpoints)
        for part, leaf in zip(parts, leaves):
            values = table.loc[rows, score_column(leaf.checkpoint, leaf.score)].to_numpy(dtype=np.float64)
            part.append(values) if exact else part.add(values)
    return [np.concatenate(part) if part else np.empty(0) for part in parts] if exact else parts


def _final_pass(paths, rules, resolved, notes, checkpoints, out_dir, write_filtered, caption_column, progress):
    for rule in resolved:
        _reset(rule)
    counts = np.zeros((len(rules) + 1, 2), dtype=np.int64)  # per step: rows in, kept
    kept_parts = []
    for path in progress_bar(paths, unit="shard", desc="curation: decisions", disable=not progress):
        table = _read(path, checkpoints, caption_column)
        decisions = pd.DataFrame({"uid": table["uid"], "row": table["row"], "kept": False,
                                  "step": pd.array([pd.NA] * len(table), dtype="Int64"), "reason": None},
                                 index=table.index)
        counts[0, 0] += len(table)
        rows, reasons = _status_ok(table, checkpoints)
        decisions.loc[reasons.index, "step"] = 0
        decisions.loc[reasons.index, "reason"] = reasons
        counts[0, 1] += len(rows)
        for number, (rule, applied) in enumerate(zip(rules, resolved), start=1):
            kept = _keep(applied, table, rows)
            lost = rows.difference(kept)
            decisions.loc[lost, "step"] = number
            decisions.loc[lost, "reason"] = rule.describe()
            counts[number] += (len(rows), len(kept))
            rows = kept
        decisions.loc[rows, "kept"] = True
        with atomic_path(out_dir / "decisions" / path.name) as tmp:
            decisions.to_parquet(tmp, index=False)
        kept_parts.append(decisions.loc[rows, ["uid", "row"]].assign(shard=path.stem))
        if write_filtered:
            marker = json.loads(path.with_name(path.stem + ".done.json").read_text())
            source = Path(marker["shard"])
            write_filtered_shard(source, decisions.loc[rows, "row"].tolist(), out_dir / "filtered" / source.name)
    kept_table = pd.concat(kept_parts, ignore_index=True)
    with atomic_path(out_dir / "kept_uids.parquet") as tmp:
        kept_table.to_parquet(tmp, index=False)
    described = ["status ok under " + ", ".join(checkpoints) if checkpoints else "-"]
    described += [rule.describe() for rule in rules]
    summary = pd.DataFrame({"step": range(len(rules) + 1), "rule": described, "rows_in": counts[:, 0],
                            "kept": counts[:, 1], "dropped": counts[:, 0] - counts[:, 1], "note": ["", *notes]})
    return summary, len(kept_table)
