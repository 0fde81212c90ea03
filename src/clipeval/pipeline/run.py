"""A scoring run: claim the run folder, score every pending shard with an executor, write the run's tables.

The one pipeline at every scale: ``score --pairs`` is a run of one :class:`~clipeval.pipeline.resume.TableShard`
on the local executor, ``score --shards`` of shard files, locally or on Ray; the refusal, resume and
completeness rules are the same for both (docs/scoring.md, docs/sharded-runs.md).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv, write_json
from clipeval.embed.options import EmbedOptions
from clipeval.layout import RESULT_COLUMNS, RunLayout, claim_run
from clipeval.pipeline.options import EXECUTORS, ExecutionOptions, ShardOptions, ShardTask
from clipeval.pipeline.resume import (
    ShardInput,
    TableShard,
    check_shard_names,
    input_name,
    is_done,
    read_markers,
    run_fingerprint,
    table_identity,
)
from clipeval.pipeline.views import write_stats, write_table_views
from clipeval.progress import progress_bar
from clipeval.warn import RunWarning, warn

PAIRS_SHARD = "pairs"  # the shard a pairs table is scored as: shards/pairs.parquet


@dataclass
class ScoringRun:
    """A scoring run's outcome.

    Attributes:
        shards: one row per input shard, input order: ``name``, ``shard``, ``state`` (``done``,
            ``failed``, ``not run``), ``this_run`` (scored by this call, not skipped), rows, seconds...
        execution: the executor's totals (``sharded_stats.json``).
        stats: ``stats.json`` (empty when nothing was scored).
        results, scores: a one-table run's ``results.csv`` and ``scores.csv`` (else None).
    """

    shards: pd.DataFrame
    execution: dict
    stats: dict
    results: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None

    @property
    def failed(self) -> pd.DataFrame:
        return self.shards[self.shards["state"] != "done"]


def score_run(run_dir: str | Path, shards: list[ShardInput], checkpoints: list[str], shard_options: ShardOptions,
              embed: EmbedOptions, execution: ExecutionOptions = ExecutionOptions(),
              overwrite: bool = False) -> ScoringRun:
    """Score every pending shard into ``run_dir`` and write the run's tables.

    ``checkpoints``' first is the primary one of ``results.csv``; ``embed.progress`` shows a bar over rows (a
    table) or over shards.

    Raises:
        ValueError: an unknown executor, no shard, or two shards with the same output name.
        RunFolderMismatch: ``run_dir`` holds a run with another fingerprint and not ``overwrite``.
    """
    if execution.executor not in EXECUTORS:
        raise ValueError(f"unknown executor {execution.executor!r}; use one of {', '.join(EXECUTORS)}")
    if not shards:
        raise ValueError("no shard to score")
    check_shard_names(shards)
    layout = RunLayout(run_dir)
    fingerprint = {**run_fingerprint(list(checkpoints), shard_options, embed),
                   "tables": {shard.name: table_identity(shard) for shard in shards if isinstance(shard, TableShard)}}
    claim_run(layout, fingerprint, overwrite)
    layout.shards.mkdir(parents=True, exist_ok=True)
    pending = [shard for shard in shards if not is_done(layout, shard)]
    for shard in pending:  # a marker of another input (changed since): its scores are no result any more
        files = layout.shard(input_name(shard))
        files.done.unlink(missing_ok=True)
        files.scores.unlink(missing_ok=True)
    for shard in shards:  # what the attempts of a Ray run whose driver died left (none of them is this run's)
        shutil.rmtree(layout.shard_attempts(input_name(shard)), ignore_errors=True)
    if len(pending) < len(shards):
        print(f"resuming {layout.root}: {len(shards) - len(pending)} of {len(shards)} shards already done, "
              f"{len(pending)} to score", file=sys.stderr)
    if execution.executor == "ray":
        embed = execution.actor_embed(embed)
    task = ShardTask(list(checkpoints), str(layout.root), shard_options, replace(embed, progress=False))
    started = time.perf_counter()
    timings: dict = {}
    records = _collect(pending, task, execution, embed.progress, timings) if pending else []
    wall = time.perf_counter() - started
    table = _shard_table(layout, shards, records)
    totals = _run_stats(table, execution, wall, timings)
    _print_faults(table, totals)
    write_csv(layout.shard_table, table)
    write_json(layout.sharded_stats, totals)
    snapshots = _last_snapshot_per_process(records)
    run = ScoringRun(table, totals, write_stats(layout, snapshots) if snapshots else {})
    warn(RunWarning(**record) for record in run.stats.get("warnings", []))
    if all(isinstance(shard, TableShard) for shard in shards) and len(shards) == 1 and not len(run.failed):
        run.results, run.scores = write_table_views(layout, list(dict.fromkeys(checkpoints)))
    if len(run.failed):
        layout.mark_incomplete(f"{len(run.failed)} of {len(shards)} shard(s) not done "
                               f"({', '.join(run.failed['name'].head(3))}{' ...' if len(run.failed) > 3 else ''})")
    else:
        layout.mark_complete()
    return run


def _collect(pending: list[ShardInput], task: ShardTask, execution: ExecutionOptions, progress: bool,
             timings: dict) -> list[dict]:
    """Every pending shard's record, with a bar over rows (tables) or shards (files); the executor's start-up
    goes into ``timings``."""
    from clipeval.pipeline.executors import run_local, run_ray  # torch and the model libraries: only when scoring

    tables = all(isinstance(shard, TableShard) for shard in pending)
    if tables and execution.executor == "local":
        total = sum(len(shard.table) for shard in pending)
        with progress_bar(total=total, unit="pair", desc="scoring", disable=not progress) as bar:
            return list(run_local(pending, task, bar.update, timings))
    records, rows, started = [], 0, time.perf_counter()
    chosen = (run_local(pending, task, timings=timings) if execution.executor == "local"
              else run_ray(pending, task, execution, timings))
    with progress_bar(total=len(pending), unit="shard", desc=f"scoring shards ({execution.executor})",
                      disable=not progress) as bar:
        for record in chosen:
            records.append(record)
            rows += record["rows"]
            bar.set_postfix(rows=rows, rows_per_s=f"{rows / (time.perf_counter() - started):.1f}")
            bar.update(1)
    return records


def _last_snapshot_per_process(records: list[dict]) -> list[dict]:
    """Each scoring process's stats after its last shard (a process's stats accumulate over its shards)."""
    last: dict[tuple, dict] = {}
    for record in records:
        if record.get("stats"):
            last[(record["host"], record["pid"])] = record["stats"]
    return list(last.values())


def _shard_table(layout: RunLayout, shards: list[ShardInput], records: list[dict]) -> pd.DataFrame:
    """One row per input shard from its marker; ``attempts`` (the Ray executor's tries of it in this run) from
    this run's records."""
    attempts = {record["name"]: record.get("attempts", 1) for record in records}
    markers = read_markers(layout)
    markers = markers.set_index("name") if len(markers) else pd.DataFrame(index=pd.Index([], name="name"))
    rows = []
    for shard in shards:
        name = input_name(shard)
        marker = markers.loc[name].to_dict() if name in markers.index else {"state": "not run"}
        rows.append({"name": name, "shard": str(shard), "this_run": name in attempts,
                     **{key: marker.get(key) for key in ("state", "rows", "seconds", "rows_per_s", "host", "pid",
                                                         "error")}, "attempts": attempts.get(name, 0)})
    return pd.DataFrame(rows)


def _run_stats(table: pd.DataFrame, execution: ExecutionOptions, wall: float, timings: dict) -> dict:
    ran = table[table["this_run"] & (table["state"] == "done")]
    rows = int(ran["rows"].sum()) if len(ran) else 0
    states = table["state"].value_counts()
    return {"executor": execution.executor, "processes": execution.ray_actors if execution.executor == "ray" else 1,
            "shards": len(table), "shards_done": int(states.get("done", 0)),
            "shards_failed": int(states.get("failed", 0)), "shards_this_run": int(table["this_run"].sum()),
            "shards_retried": len({fault["name"] for fault in timings.get("faults", [])}),
            "rows_this_run": rows, "wall_s": wall, "rows_per_s": rows / wall if wall and rows else None,
            **{name: timings.get(name) for name in ("cluster_start_s", "startup_s", "checkpoint_load_s")},
            **({"shard_retries": execution.shard_retries, "speculative_after": execution.speculative_after,
                **{name: timings.get(name) for name in ("speculative_copies", "speculative_wins", "faults")}}
               if execution.executor == "ray" else {}),
            "shard_seconds": ran["seconds"].astype(float).describe().to_dict() if len(ran) else {}}


def _print_faults(table: pd.DataFrame, totals: dict) -> None:
    """The run's faults on stderr, when it had any: shards done, retried and failed, each fault's reason."""
    faults = totals.get("faults") or []
    failed = table[table["this_run"] & (table["state"] == "failed")]
    if not faults and not len(failed):
        return
    print(f"faults: {totals['shards_done']} of {totals['shards']} shards done, {totals['shards_retried']} "
          f"retried, {totals['shards_failed']} failed", file=sys.stderr)
    for fault in faults:
        print(f"  shard {fault['name']}: {fault['reason']}", file=sys.stderr)


def score_pairs_table(run_dir: str | Path, pairs: pd.DataFrame, checkpoints: list[str], shard_options: ShardOptions,
                      embed: EmbedOptions, overwrite: bool = False) -> ScoringRun:
    """Score a pairs table as one shard on the local executor; its ``results.csv`` and ``scores.csv`` are written.

    ``pairs.attrs["base_dir"]`` is the folder of its relative image paths; the others as for :func:`score_run`.

    Raises:
        ValueError: the table has an output column's name, or lacks the image or caption column.
    """
    clash = [column for column in RESULT_COLUMNS if column in pairs.columns]
    if clash:
        raise ValueError(f"the pairs table already has column(s) {clash}; rename them, they are outputs")
    missing = [column for column in (shard_options.image_column, shard_options.caption_column)
               if column not in pairs.columns]
    if missing:
        raise ValueError(f"the pairs table has no column(s) {missing}; found {list(pairs.columns)}")
    shard = TableShard(PAIRS_SHARD, pairs.reset_index(drop=True), pairs.attrs.get("base_dir"))
    return score_run(run_dir, [shard], checkpoints, shard_options, embed, ExecutionOptions(), overwrite)
