"""Notebook 09's study: the same pairs scored in shards by each executor, a resumed run, and curation at scale.

Only the notebook calls this; the pipeline is :mod:`clipeval.pipeline`, curation :mod:`clipeval.curate`.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv
from clipeval.curate.engine import RunCuration, curate_run, curate_table
from clipeval.curate.rules import parse_rule
from clipeval.data.shards import write_shards
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.layout import CurationLayout, RunLayout, score_column
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.pipeline.run import score_run
from clipeval.pipeline.scorer import input_name


@dataclass
class ShardedStudy:
    """Notebook 09: the same pairs scored in shards by each executor, a resumed run and curation at scale.

    Attributes:
        shards: every executor's ``shards.csv`` rows, with ``executor``.
        stats: ``sharded_stats.json`` per executor.
        max_difference: the largest |cosine difference| of a row between the executors (0 for one).
        resume: the resumed run's ``shards.csv``: which shards it skipped and which it scored.
        curation: the rule over the shards.
        same_as_one_table: whether the curation keeps exactly the rows curating the concatenated table keeps.
    """

    shards: pd.DataFrame
    stats: dict
    max_difference: float
    resume: pd.DataFrame
    curation: RunCuration
    same_as_one_table: bool


def compute_sharded_study(run_dir: str | Path, pairs_path: str, checkpoint: str, n_shards: int = 8,
                          executors: Sequence[str] = ("local", "ray"), ray_actors: int = 2,
                          rule: str = "top:0.3[{spec}]", embed: EmbedOptions = EmbedOptions(),
                          interrupted: int = 2) -> ShardedStudy:
    """Split ``pairs_path`` into webdataset shards and run the sharded pipeline on them (notebook 09).

    Each executor scores every shard into a fresh ``<run_dir>/sharded/<executor>``; then the first
    executor's run is "interrupted" (the done-markers of its last ``interrupted`` shards removed)
    and run again, which rescores those shards only; then ``rule`` (``{spec}``: the checkpoint)
    curates its shards into ``<run_dir>/sharded/curated``. ``<run_dir>/sharded/executors.csv``
    sums it up for the run report. The embedding cache is off: every run scores for real.
    """
    study = RunLayout(run_dir)
    root = study.sharded_study
    shutil.rmtree(root, ignore_errors=True)
    inputs = write_shards(read_pairs(pairs_path), root / "input", n_shards, "tar")
    embed = replace(embed, embedding_cache=False, progress=False)
    runs = {executor: RunLayout(root / executor) for executor in executors}
    tables, stats = [], {}
    for executor, run in runs.items():
        scored = score_run(run.root, list(inputs), [checkpoint], ShardOptions(), embed,
                           ExecutionOptions(executor=executor, ray_actors=ray_actors))
        tables.append(scored.shards.assign(executor=executor))
        stats[executor] = scored.execution
    scores = {executor: _concat(run) for executor, run in runs.items()}
    column = score_column("cosine", checkpoint)
    first = scores[executors[0]]
    max_difference = max(float((first[column] - table[column]).abs().max()) for table in scores.values())
    for path in inputs[-interrupted:]:
        runs[executors[0]].shard(input_name(path)).done.unlink()
    resumed = score_run(runs[executors[0]].root, list(inputs), [checkpoint], ShardOptions(), embed,
                        ExecutionOptions(executor=executors[0], ray_actors=ray_actors))
    rules = [parse_rule(rule.format(spec=checkpoint))]
    curation = curate_run(runs[executors[0]], rules, CurationLayout(root / "curated"), progress=False)
    expected = curate_table(first.reset_index(drop=True).rename_axis("row_id"), rules)
    kept = pd.read_parquet(curation.out.kept_uids)["uid"]
    same = kept.tolist() == first["uid"].iloc[expected.kept].tolist()
    summary = pd.DataFrame(stats).T[["shards", "rows_this_run", "wall_s", "rows_per_s", "processes"]]
    write_csv(study.sharded_executors, summary.rename_axis("executor").reset_index().assign(
        max_cosine_difference=max_difference, curation_same_as_one_table=same))
    return ShardedStudy(pd.concat(tables, ignore_index=True), stats, max_difference, resumed.shards, curation, same)


def _concat(run: RunLayout) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in run.scored_shards()], ignore_index=True)
