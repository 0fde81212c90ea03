"""The one curation engine: rules applied in order over scored shards; a table in memory is one shard.

docs/curation.md describes the passes, the exact and sketched cuts and step 0 (unreadable rows and repeated
uids dropped before any rule). No torch is imported here or below (an import contract).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipeval.atomic import atomic_path, write_csv
from clipeval.curate.options import EXACT_LIMIT
from clipeval.curate.rules import Combination, GlobalRule, Rule, TopCut
from clipeval.curate.sketch import ScoreHistogram
from clipeval.data.shards import write_filtered_shard
from clipeval.layout import RESULT_COLUMNS, CurationLayout, RunLayout, score_column
from clipeval.progress import progress_bar

Source = Path | pd.DataFrame


def _load(source: Source, checkpoints: list[str], caption_column: str) -> pd.DataFrame:
    """What the rules read of a source: ids, caption, image size and the rules' checkpoints' columns."""
    if isinstance(source, pd.DataFrame):
        return source
    wanted = {"uid", "row", caption_column, "image_width", "image_height", "status"}
    names = pq.read_schema(source).names
    table = pd.read_parquet(source, columns=[name for name in names if name in wanted or name.startswith("status[")
                                             or any(name.endswith(f"[{spec}]") for spec in checkpoints)])
    if caption_column != "caption" and caption_column in table and "caption" not in table:
        table = table.rename(columns={caption_column: "caption"})
    return table


def _rows(source: Source) -> int:
    return len(source) if isinstance(source, pd.DataFrame) else pq.read_metadata(source).num_rows


def _global_leaves(rule: Rule) -> list[GlobalRule]:
    if isinstance(rule, Combination):
        return [leaf for part in rule.rules for leaf in _global_leaves(part)]
    return [rule] if isinstance(rule, GlobalRule) else []


def _substitute(rule: Rule, resolved: dict[int, Rule]) -> Rule:
    if isinstance(rule, Combination):
        return replace(rule, rules=[_substitute(part, resolved) for part in rule.rules])
    return resolved.get(id(rule), rule)


def _reset(rule: Rule) -> None:
    if isinstance(rule, Combination):
        for part in rule.rules:
            _reset(part)
    elif isinstance(rule, TopCut):
        rule.reset()


DUPLICATE_UID = "duplicate_uid"
# rules apply in the order given: a top fraction or percentile after another step is over the rows it kept
ORDER_NOTE = "over the rows the steps before it kept (rules apply in the order given)"


def _status_ok(table: pd.DataFrame, checkpoints: list[str]) -> tuple[pd.Index, pd.Series]:
    """The rows ok under every checkpoint and as a row, and ``status:<code>`` for each other row.

    The rules' checkpoints are checked first (their codes are the reasons), then the row's own
    ``status`` (the first failure under any checkpoint), then every other ``status[SPEC]``.
    """
    rows, reasons = table.index, []
    for spec in checkpoints:
        if score_column("status", spec) not in table:
            held = [c[len("status["):-1] for c in table.columns if c.startswith("status[")]
            raise ValueError(f"the run has no scores for {spec}; it has {held}")
    columns = [score_column("status", spec) for spec in checkpoints]
    columns += [column for column in table.columns if column == "status" or column.startswith("status[")]
    for column in dict.fromkeys(columns):
        bad = table.loc[rows, column].ne("ok").to_numpy()
        reasons.append("status:" + table.loc[rows[bad], column].astype(str))
        rows = rows[~bad]
    return rows, pd.concat(reasons) if reasons else pd.Series(dtype=str)


def _uid_hashes(source: Source) -> np.ndarray:
    """A 64-bit hash of every row's uid (none when the source has no ``uid`` column)."""
    if isinstance(source, pd.DataFrame):
        uids = source.get("uid")
    else:
        uids = pd.read_parquet(source, columns=["uid"])["uid"] if "uid" in pq.read_schema(source).names else None
    if uids is None:
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_array(uids.astype(str).to_numpy(dtype=object))


def _repeated_hashes(sources: Sequence[Source]) -> frozenset[int]:
    """The uid hashes more than one row of the run has (8 bytes a row, one pass over the uid columns)."""
    hashes = [_uid_hashes(source) for source in sources]
    every = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    values, counts = np.unique(every, return_counts=True)
    return frozenset(values[counts > 1].tolist())


def _record_cut(decisions: pd.DataFrame, rule: Rule, table: pd.DataFrame, rows: pd.Index) -> None:
    """Write each of ``rows``' score under ``rule`` and the rule's cut into ``decisions`` (a rule with one score)."""
    judged = rule.judged()
    if judged is None or not len(rows):
        return
    decisions.loc[rows, "score"] = table.loc[rows, score_column(*judged)].astype(float)
    cut = rule.cut_value()
    if cut is not None and math.isfinite(cut):
        decisions.loc[rows, "cut"] = cut


def _keep(rule: Rule, table: pd.DataFrame, rows: pd.Index) -> pd.Index:
    """``rule.keep``; no rows (an empty shard, or all dropped) stay none whatever the columns' types."""
    return rule.keep(table, rows) if len(rows) else rows


@dataclass
class Plan:
    """Rules with their global cuts resolved over every source.

    Attributes:
        resolved: each rule with its top fractions and percentiles replaced by row-wise cuts.
        notes: per rule, what its cuts were (empty for row-wise rules).
        checkpoints: every checkpoint the rules use (their rows must be ok).
        exact: whether every global cut is exact.
        repeated: the hashes of uids more than one row has (the candidates for ``duplicate_uid``).
        duplicates: rows dropped as ``duplicate_uid`` in the pass so far.
    """

    rules: list[Rule]
    resolved: list[Rule]
    notes: list[str]
    checkpoints: list[str]
    exact: bool
    rows: int
    repeated: frozenset[int] = frozenset()
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set)

    def admissible(self, table: pd.DataFrame) -> tuple[pd.Index, pd.Series]:
        """Step 0 on one source, in pass order: the rows readable and not a repeated uid, and why each other is not.

        A uid's first row in the run (source order, then row order) is its row; every later row with
        it is a ``duplicate_uid``, whatever its status (a failed row's status is its reason).
        """
        rows, reasons = _status_ok(table, self.checkpoints)
        if not self.repeated or "uid" not in table or not len(table):
            return rows, reasons
        uids = table["uid"].astype(str)
        candidates = np.isin(pd.util.hash_array(uids.to_numpy(dtype=object)),
                             np.fromiter(self.repeated, dtype=np.uint64, count=len(self.repeated)))
        later = []
        for label, uid in uids[candidates].items():
            if uid in self._seen:
                later.append(label)
            else:
                self._seen.add(uid)
        duplicate = rows.intersection(pd.Index(later))
        self.duplicates += len(duplicate)
        rows = rows.difference(duplicate, sort=False)
        return rows, pd.concat([reasons, pd.Series(DUPLICATE_UID, index=duplicate, dtype=object)])

    def decide(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Every row of one source: ``kept``, or the ``step`` (0: a status) and ``reason`` that dropped it,
        with the row's ``score`` under the rule and the rule's ``cut`` when the rule cuts one score
        (:meth:`~clipeval.curate.rules.Rule.judged`; empty for the status step and the basic filter).

        Returns:
            The decisions (indexed like ``table``) and each step's rows in and rows kept.
        """
        decisions = pd.DataFrame({"kept": False, "step": pd.array([pd.NA] * len(table), dtype="Int64"),
                                  "reason": None, "score": np.nan, "cut": np.nan}, index=table.index)
        counts = np.zeros((len(self.rules) + 1, 2), dtype=np.int64)
        rows, reasons = self.admissible(table)
        decisions.loc[reasons.index, "step"] = 0
        decisions.loc[reasons.index, "reason"] = reasons
        counts[0] = (len(table), len(rows))
        for number, (rule, applied) in enumerate(zip(self.rules, self.resolved, strict=True), start=1):
            kept = _keep(applied, table, rows)
            lost = rows.difference(kept)
            decisions.loc[lost, "step"] = number
            decisions.loc[lost, "reason"] = rule.describe()
            _record_cut(decisions, applied, table, lost)
            counts[number] = (len(rows), len(kept))
            rows = kept
        decisions.loc[rows, "kept"] = True
        return decisions, counts

    def reset(self) -> None:
        """Start a pass over the sources (an exact top cut counts its tied rows across them; uids are seen anew)."""
        for rule in self.resolved:
            _reset(rule)
        self._seen, self.duplicates = set(), 0

    def summary(self, counts: np.ndarray) -> pd.DataFrame:
        """One row per step: ``step``, ``rule``, ``rows_in``, ``kept``, ``dropped``, ``note``."""
        described = ["readable: status ok (every checkpoint"
                     + (", ".join(["", *self.checkpoints]) if self.checkpoints else "") + "); uid unique"]
        described += [rule.describe() for rule in self.rules]
        first = (f"{self.duplicates} row(s) dropped as {DUPLICATE_UID}: a uid an earlier row of the run has"
                 if self.duplicates else "")
        notes = [note if number == 1 or not _global_leaves(rule) else "; ".join(filter(None, [ORDER_NOTE, note]))
                 for number, (rule, note) in enumerate(zip(self.rules, self.notes, strict=True), start=1)]
        return pd.DataFrame({"step": range(len(self.rules) + 1), "rule": described, "rows_in": counts[:, 0],
                             "kept": counts[:, 1], "dropped": counts[:, 0] - counts[:, 1],
                             "note": [first, *notes]})


def plan(sources: Sequence[Source], rules: list[Rule], exact_limit: int = EXACT_LIMIT, caption_column: str = "caption",
         progress: bool = False) -> Plan:
    """Resolve the rules' global cuts over every source (one pass per rule that has one).

    Raises:
        ValueError: no source, or a rule names a checkpoint the sources have no scores for.
    """
    if not sources:
        raise ValueError("no scored shard to curate: score the pairs first (clipeval score)")
    checkpoints = list(dict.fromkeys(spec for rule in rules for spec in rule.checkpoints()))
    total = sum(_rows(source) for source in sources)
    exact = total <= exact_limit
    made = Plan(list(rules), [], [], checkpoints, exact, total, _repeated_hashes(sources))
    for number, rule in enumerate(rules, start=1):
        leaves = _global_leaves(rule)
        if leaves:
            gathered = _gather(sources, made, leaves, caption_column, progress, number)
            cuts = [leaf.resolve_exact(values) if exact else leaf.resolve_sketch(values)
                    for leaf, values in zip(leaves, gathered, strict=True)]
            rule = _substitute(rule, {id(leaf): cut for leaf, (cut, _) in zip(leaves, cuts, strict=True)})
        made.resolved.append(rule)
        made.notes.append("; ".join(note for _, note in cuts) if leaves else "")
    return made


def _gather(sources, made: Plan, leaves: list[GlobalRule], caption_column: str, progress: bool, number: int) -> list:
    """The scores each global leaf judges (rows still kept by the steps before it), or their histograms."""
    made.reset()
    parts = [[] for _ in leaves] if made.exact else [ScoreHistogram.for_score(leaf.score) for leaf in leaves]
    for source in progress_bar(sources, unit="shard", desc=f"curation step {number}: score distribution",
                               disable=not progress):
        table = _load(source, made.checkpoints, caption_column)
        rows = made.admissible(table)[0]
        for rule in made.resolved:
            rows = _keep(rule, table, rows)
        for part, leaf in zip(parts, leaves, strict=True):
            values = table.loc[rows, score_column(leaf.score, leaf.checkpoint)].to_numpy(dtype=np.float64)
            part.append(values) if made.exact else part.add(values)
    return [np.concatenate(part) if part else np.empty(0) for part in parts] if made.exact else parts


def _dropped_rows(row_ids, decisions: pd.DataFrame) -> pd.DataFrame:
    """``dropped.csv``'s rows: ``row_id``, ``step``, ``reason``, the row's ``score`` under the rule and its ``cut``."""
    return pd.DataFrame({"row_id": np.asarray(row_ids), "step": decisions["step"].astype(int).to_numpy(),
                         "reason": decisions["reason"].to_numpy(), "score": decisions["score"].to_numpy(),
                         "cut": decisions["cut"].to_numpy()}).sort_values("row_id", ignore_index=True)


def run_checkpoints(run: RunLayout) -> list[str]:
    """The checkpoints a scored run folder holds, the primary (first) one first (from ``run.json``; none without)."""
    if not run.fingerprint.exists():
        return []
    return list(json.loads(run.fingerprint.read_text()).get("checkpoints", []))


@dataclass
class Curation:
    """The outcome of curating one table (:func:`curate_table`).

    Attributes:
        kept: row labels kept, in input order.
        dropped: one row per dropped row: ``row_id``, ``step`` (1-based rule number, 0 for the
            status check), ``reason``, ``score`` (the row's score under the rule) and ``cut``.
        steps: one row per step: ``step``, ``rule``, ``rows_in``, ``kept``, ``dropped``, ``note``.
    """

    kept: pd.Index
    dropped: pd.DataFrame
    steps: pd.DataFrame


def curate_table(table: pd.DataFrame, rules: list[Rule]) -> Curation:
    """Apply ``rules`` to one wide table in memory: the one-shard case of the engine, always exact."""
    made = plan([table], rules, exact_limit=math.inf)
    made.reset()
    decisions, counts = made.decide(table)
    dropped = decisions[~decisions["kept"]]
    dropped = _dropped_rows(dropped.index, dropped)
    return Curation(decisions.index[decisions["kept"].to_numpy(dtype=bool)], dropped, made.summary(counts))


@dataclass
class RunCuration:
    """The outcome of :func:`curate_run`: the summary (:meth:`Plan.summary`), rows kept and judged, whether every
    global cut was exact, the curation folder and, for a one-table run, its dropped rows (else None)."""

    summary: pd.DataFrame
    kept: int
    rows: int
    exact: bool
    out: CurationLayout
    dropped: pd.DataFrame | None = None


def curate_run(run: RunLayout, rules: list[Rule], out: CurationLayout, exact_limit: int = EXACT_LIMIT,
               write_filtered: bool = False, progress: bool = True) -> RunCuration:
    """Apply ``rules`` in order over a run's scored shards into the curation folder ``out`` (docs/curation.md);
    kept + dropped = every row.

    Raises:
        ValueError: no scored shard, or a rule names a checkpoint the run has no scores for.
    """
    caption_column = json.loads(run.fingerprint.read_text())["caption_column"] if run.fingerprint.exists() \
        else "caption"
    if not run.is_complete:
        print(f"warning: {run.incomplete_reason}; curating its done shards only", file=sys.stderr)
    paths = run.scored_shards()
    made = plan(paths, rules, exact_limit, caption_column, progress)
    made.reset()
    counts, kept_parts = np.zeros((len(rules) + 1, 2), dtype=np.int64), []
    for path in progress_bar(paths, unit="shard", desc="curation: decisions", disable=not progress):
        table = _load(path, made.checkpoints, caption_column)
        decisions, shard_counts = made.decide(table)
        counts += shard_counts
        decisions.insert(0, "row", table["row"])
        decisions.insert(0, "uid", table["uid"])
        with atomic_path(out.decisions(path.stem)) as tmp:
            decisions.to_parquet(tmp, index=False)
        kept = decisions[decisions["kept"].to_numpy(dtype=bool)]
        kept_parts.append(kept[["uid", "row"]].assign(shard=path.stem))
        if write_filtered:
            source = Path(json.loads(run.shard(path.stem).done.read_text())["shard"])
            write_filtered_shard(source, kept["row"].tolist(), out.filtered(source.name), caption_column)
    kept_table = pd.concat(kept_parts, ignore_index=True)
    with atomic_path(out.kept_uids) as tmp:
        kept_table.to_parquet(tmp, index=False)
    summary = made.summary(counts)
    write_csv(out.summary, summary)
    dropped = _table_views(run, decisions, out) if run.results.exists() and len(paths) == 1 else None
    return RunCuration(summary, len(kept_table), made.rows, made.exact, out, dropped)


def _table_views(run: RunLayout, decisions: pd.DataFrame, out: CurationLayout) -> pd.DataFrame:
    """A one-table run's curation as its rows: ``kept.csv``, ``dropped.csv`` and ``curated.csv`` (the kept input
    rows with every input column, from ``results.csv``); returns the dropped rows."""
    kept = decisions.loc[decisions["kept"].to_numpy(dtype=bool), "row"]
    lost = decisions[~decisions["kept"].to_numpy(dtype=bool)]
    dropped = _dropped_rows(lost["row"], lost)
    results = pd.read_csv(run.results, keep_default_na=False, na_values=[""])
    inputs = results.drop(columns=[column for column in RESULT_COLUMNS if column in results.columns])
    write_csv(out.kept, pd.DataFrame({"row_id": kept.to_numpy()}))
    write_csv(out.dropped, dropped)
    write_csv(out.curated, inputs.loc[kept.to_numpy()].rename_axis("row_id").reset_index())
    return dropped
