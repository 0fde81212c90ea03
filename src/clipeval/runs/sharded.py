"""Sharded steps: score a list of shards with an executor, and curate the scored shards.

``score_shards`` is resumable by shard (README: Sharded runs): shards whose done-marker exists
are skipped, the rest (new, failed or interrupted) are scored. ``curate_shards`` applies the
curation rules over the scored shards (:mod:`clipeval.eval.shard_curation`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv, write_json
from clipeval.data.fetch import DEFAULT_CACHE_DIR, FetchOptions
from clipeval.data.shards import list_shards, shard_name, write_shards
from clipeval.data.sources import read_pairs
from clipeval.eval.curation import curate, parse_rule, score_column
from clipeval.eval.scoring import ScoreOptions
from clipeval.eval.shard_curation import EXACT_LIMIT, ShardCuration, curate_scored_shards
from clipeval.eval.sharded import (
    check_shard_names,
    fingerprint,
    is_done,
    prepare_run_folder,
    read_markers,
    scored_shards,
    shard_files,
)
from clipeval.progress import progress_bar
from clipeval.runs.executors import EXECUTORS, RayOptions, ShardTask, run_local, run_ray
from clipeval.runs.manifest import update_manifest


@dataclass
class ShardedRun:
    """A sharded scoring run.

    Attributes:
        shards: one row per input shard, input order: ``name``, ``shard``, ``state`` (``done``,
            ``failed``), ``this_run`` (scored by this call, not skipped), rows, seconds...
        stats: the run's totals (also ``sharded_stats.json``).
    """

    shards: pd.DataFrame
    stats: dict

    @property
    def failed(self) -> pd.DataFrame:
        return self.shards[self.shards["state"] != "done"]


def score_shards(run_dir: str | Path, shards: Sequence[str] | str, checkpoints: Sequence[str],
                 executor: str = "local", num_workers: int = 2, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, address: str | None = None, image_column: str = "image",
                 caption_column: str = "caption", uid_column: str = "uid", batch_size: int = 32,
                 chunk_size: int = 256, device: str = "auto", precision: str = "auto", workers: int = 8,
                 cache_dir: str | None = None, fetch_timeout: float = 10.0, fetch_retries: int = 3,
                 max_download_mb: float = 50.0, decode_workers: int | None = None, fast_decode: bool = False,
                 embedding_cache: bool = False, overwrite: bool = False, progress: bool = True) -> ShardedRun:
    """Score every pending shard into ``run_dir/shards/`` and write ``shards.csv`` and ``sharded_stats.json``.

    Args:
        run_dir: the run folder.
        shards: shard files, folders, globs or brace patterns (:func:`clipeval.data.shards.list_shards`).
        checkpoints: checkpoint specs.
        executor: ``local`` or ``ray`` (:mod:`clipeval.runs.executors`).
        num_workers, cpus_per_worker, gpus_per_worker, address: the Ray executor's pool and cluster.
        image_column, caption_column, uid_column: the shards' columns.
        batch_size, chunk_size, device, precision, workers, decode_workers, fast_decode: as for scoring.
        cache_dir, fetch_timeout, fetch_retries, max_download_mb: how URLs are fetched.
        embedding_cache: use the embedding cache (off by default: at scale every pair is new and the
            vectors would fill the disk).
        overwrite: discard the shards of an earlier run with other checkpoints or options.
        progress: a progress bar over shards.

    Returns:
        The :class:`ShardedRun`.

    Raises:
        ValueError: an unknown executor, no shard, or two shards with the same output name.
        RunFolderMismatch: ``run_dir`` holds a run with another fingerprint and not ``overwrite``.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    params = {key: value for key, value in locals().items() if key != "run_dir"}
    paths = list_shards(list(shards) if not isinstance(shards, str) else shards)
    check_shard_names(paths)
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    ray_options = RayOptions(num_workers, cpus_per_worker, gpus_per_worker, address)
    if executor == "ray":
        decode_workers = ray_options.decode_workers(decode_workers)
    options = ScoreOptions(image_column=image_column, caption_column=caption_column, batch_size=batch_size,
                           chunk_size=chunk_size, device=device, precision=precision, progress=False,
                           workers=workers, decode_workers=decode_workers, fast_decode=fast_decode,
                           embedding_cache=embedding_cache,
                           fetch=FetchOptions(timeout=fetch_timeout, retries=fetch_retries,
                                              max_bytes=int(max_download_mb * 2**20), cache_dir=cache))
    run_dir = Path(run_dir)
    prepare_run_folder(run_dir, fingerprint(list(checkpoints), options, uid_column), overwrite)
    pending = [path for path in paths if not is_done(run_dir, path)]
    if len(pending) < len(paths):
        print(f"resuming {run_dir}: {len(paths) - len(pending)} of {len(paths)} shards already done, "
              f"{len(pending)} to score", file=sys.stderr)
    task = ShardTask(list(checkpoints), str(run_dir), options, uid_column)
    records = (run_local(pending, task) if executor == "local" else
               run_ray(pending, task, ray_options))
    started = time.perf_counter()
    this_run, rows = set(), 0
    with progress_bar(total=len(pending), unit="shard", desc=f"scoring shards ({executor})",
                      disable=not progress) as bar:
        for record in records:
            this_run.add(record["name"])
            rows += record["rows"]
            bar.set_postfix(rows=rows, rows_per_s=f"{rows / (time.perf_counter() - started):.1f}")
            bar.update(1)
    wall = time.perf_counter() - started
    table = _shard_table(run_dir, paths, this_run)
    stats = _run_stats(table, executor, num_workers if executor == "ray" else 1, wall)
    write_csv(run_dir / "shards.csv", table)
    write_json(run_dir / "sharded_stats.json", stats)
    update_manifest(run_dir / "manifest.json", "score_shards", params, list(checkpoints), [str(p) for p in paths])
    return ShardedRun(table, stats)


def _shard_table(run_dir: Path, paths: list[Path], this_run: set[str]) -> pd.DataFrame:
    markers = read_markers(run_dir)
    markers = markers.set_index("name") if len(markers) else pd.DataFrame(index=pd.Index([], name="name"))
    rows = []
    for path in paths:
        name = shard_name(path)
        marker = markers.loc[name].to_dict() if name in markers.index else {"state": "not run"}
        rows.append({"name": name, "shard": str(path), "this_run": name in this_run,
                     **{key: marker.get(key) for key in ("state", "rows", "seconds", "rows_per_s", "host", "pid",
                                                         "error")}})
    return pd.DataFrame(rows)


def _run_stats(table: pd.DataFrame, executor: str, workers: int, wall: float) -> dict:
    ran = table[table["this_run"] & (table["state"] == "done")]
    rows = int(ran["rows"].sum()) if len(ran) else 0
    states = table["state"].value_counts()
    return {"executor": executor, "workers": workers, "shards": len(table),
            "shards_done": int(states.get("done", 0)), "shards_failed": int(states.get("failed", 0)),
            "shards_this_run": int(table["this_run"].sum()), "rows_this_run": rows, "wall_s": wall,
            "rows_per_s": rows / wall if wall and rows else None,
            "shard_seconds": ran["seconds"].astype(float).describe().to_dict() if len(ran) else {}}


def curate_shards(run_dir: str | Path, rules: Sequence[str], out_dir: str | Path, exact_limit: int = EXACT_LIMIT,
                  write_filtered: bool = False, progress: bool = True) -> ShardCuration:
    """Apply curation rules (their command-line form) to a sharded run's scored shards.

    Writes ``kept_uids.parquet``, one ``decisions/<shard>.parquet`` per shard (every row: kept
    or the step and reason that dropped it), ``summary.csv`` (rows in, kept and dropped per
    step, the cut and whether it is exact) and, with ``write_filtered``, each input shard
    filtered to its kept samples in its own format under ``filtered/``.
    """
    params = {key: value for key, value in locals().items() if key != "out_dir"}
    caption_column = json.loads((Path(run_dir) / "run.json").read_text())["caption_column"]
    curation = curate_scored_shards(scored_shards(run_dir), [parse_rule(rule) for rule in rules], out_dir,
                                    exact_limit=exact_limit, write_filtered=write_filtered,
                                    caption_column=caption_column, progress=progress)
    update_manifest(Path(out_dir) / "manifest.json", "curate_shards", params, [], [str(run_dir)])
    return curation


@dataclass
class ShardedStudy:
    """Notebook 09: the same pairs scored in shards by each executor, a resumed run and curation at scale.

    Attributes:
        shards: every executor's ``shards.csv`` rows, with ``executor``.
        stats: ``sharded_stats.json`` per executor.
        max_difference: the largest |cosine difference| of a row between the executors (0 for one).
        resume: the resumed run's ``shards.csv``: which shards it skipped and which it scored.
        curation: the rule over the shards, and ``same_as_one_table``: whether it keeps exactly
            the rows :func:`~clipeval.eval.curation.curate` keeps on the concatenated table.
    """

    shards: pd.DataFrame
    stats: dict
    max_difference: float
    resume: pd.DataFrame
    curation: ShardCuration
    same_as_one_table: bool


def sharded_study(run_dir: str | Path, pairs_path: str, checkpoint: str, n_shards: int = 8,
                  executors: Sequence[str] = ("local", "ray"), num_workers: int = 2, rule: str = "top:0.3[{spec}]",
                  batch_size: int = 32, device: str = "auto", interrupted: int = 2) -> ShardedStudy:
    """Split ``pairs_path`` into webdataset shards and run the sharded pipeline on them (notebook 09).

    Each executor scores every shard into a fresh ``<run_dir>/sharded/<executor>``; then the first
    executor's run is "interrupted" (the done-markers of its last ``interrupted`` shards removed)
    and run again, which rescores those shards only; then ``rule`` (``{spec}``: the checkpoint)
    curates its shards into ``<run_dir>/sharded/curated``. ``<run_dir>/sharded/executors.csv``
    sums it up for the run report.
    """
    root = Path(run_dir) / "sharded"
    shutil.rmtree(root, ignore_errors=True)
    pairs = read_pairs(pairs_path)
    inputs = write_shards(pairs, root / "input", n_shards, "tar")
    tables, stats = [], {}
    for executor in executors:
        run = score_shards(root / executor, [str(path) for path in inputs], [checkpoint], executor=executor,
                           num_workers=num_workers, batch_size=batch_size, device=device)
        tables.append(run.shards.assign(executor=executor))
        stats[executor] = run.stats
    scores = {executor: _concat_scores(root / executor) for executor in executors}
    column = score_column(checkpoint)
    first = scores[executors[0]]
    max_difference = max(float((first[column] - table[column]).abs().max()) for table in scores.values())
    for path in inputs[-interrupted:]:
        shard_files(root / executors[0], path).done.unlink()
    resumed = score_shards(root / executors[0], [str(path) for path in inputs], [checkpoint],
                           executor=executors[0], num_workers=num_workers, batch_size=batch_size, device=device)
    rule = rule.format(spec=checkpoint)
    curation = curate_shards(root / executors[0], [rule], root / "curated")
    expected = curate(first.reset_index(drop=True).rename_axis("row_id"), [parse_rule(rule)])
    kept = pd.read_parquet(root / "curated" / "kept_uids.parquet")["uid"]
    same = kept.tolist() == first["uid"].iloc[expected.kept].tolist()
    summary = pd.DataFrame(stats).T[["shards", "rows_this_run", "wall_s", "rows_per_s", "workers"]]
    write_csv(root / "executors.csv", summary.rename_axis("executor").reset_index().assign(
        max_cosine_difference=max_difference, curation_same_as_one_table=same))
    return ShardedStudy(pd.concat(tables, ignore_index=True), stats, max_difference, resumed.shards, curation, same)


def _concat_scores(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in scored_shards(run_dir)], ignore_index=True)
