"""Sharded scoring: each input shard scored whole into one output parquet and a done-marker.

The unit of work, of parallelism and of resuming is the shard. For an input shard
``.../shard-00007.tar`` a run folder gets ``shards/shard-00007.parquet`` (the scores) and then
``shards/shard-00007.done.json`` (the shard's stats). A shard is done exactly when its marker
exists: the marker is written after the parquet, both atomically, so a run killed at any point
leaves whole files only, and a rerun skips the done shards and redoes the rest. A shard that
cannot be read gets ``shards/<name>.failed.json`` instead and is retried by the next run; a
sample that fails (a corrupt image, an empty caption) keeps its row with a status and reason.

Output columns, one row per input sample in shard order: ``uid``, ``row`` (its position in the
shard), every input column except image bytes (an input column named like an output one is
kept as ``input:<name>``), ``image_width``/``image_height`` (from the header), the row's
``status``/``error`` (``ok`` when ok under every checkpoint, else the first failure), and per
checkpoint ``cosine[SPEC]``, ``clip_score_100[SPEC]``, ``caption_truncated[SPEC]``,
``status[SPEC]``, ``error[SPEC]``, ``model_key[SPEC]`` (the embedding cache's model key: spec,
weights, preprocessing, precision...) and ``preprocess[SPEC]`` (a short hash of the transform's
description, which the done-marker holds in full).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from clipeval.atomic import atomic_path, write_json
from clipeval.data.shards import ShardReadError, read_shard, shard_name
from clipeval.eval.embed import EMBEDDING_VERSION, batches, model_key
from clipeval.eval.scoring import SCORE_COLUMNS, ChunkScorer, RunFolderMismatch, ScoreOptions

SHARDS_FOLDER = "shards"
PER_CHECKPOINT = ("cosine", "clip_score_100", "caption_truncated", "status", "error", "model_key", "preprocess")
ROW_COLUMNS = ("uid", "row", "image_width", "image_height", "status", "error")


def column_of(field: str, spec: str) -> str:
    """The output column of a per-checkpoint field: ``cosine[SPEC]``."""
    return f"{field}[{spec}]"


@dataclass(frozen=True)
class ShardFiles:
    """Where one input shard's outputs go in a run folder."""

    scores: Path
    done: Path
    failed: Path


def shard_files(run_dir: str | Path, shard: str | Path) -> ShardFiles:
    folder = Path(run_dir) / SHARDS_FOLDER
    name = shard_name(shard)
    return ShardFiles(folder / f"{name}.parquet", folder / f"{name}.done.json", folder / f"{name}.failed.json")


def check_shard_names(shards: list[Path]) -> None:
    """Refuse two shards whose outputs would share a name (same file name in two folders)."""
    seen: dict[str, Path] = {}
    for shard in shards:
        name = shard_name(shard)
        if name in seen:
            raise ValueError(f"two shards would write the same output {name}.parquet: {seen[name]} and {shard}; "
                             "rename one, or run each folder into its own run folder")
        seen[name] = shard


def is_done(run_dir: str | Path, shard: str | Path) -> bool:
    """The resume rule: a shard is done when its done-marker exists."""
    return shard_files(run_dir, shard).done.exists()


def fingerprint(checkpoints: list[str], options: ScoreOptions, uid_column: str) -> dict:
    """What makes two sharded runs' rows comparable: checkpoints, columns and the options that change scores."""
    return {"checkpoints": list(dict.fromkeys(checkpoints)), "image_column": options.image_column,
            "caption_column": options.caption_column, "uid_column": uid_column, "precision": options.precision,
            "fast_decode": options.fast_decode, "embedding_version": EMBEDDING_VERSION}


def prepare_run_folder(run_dir: str | Path, expected: dict, overwrite: bool) -> None:
    """Write ``run.json``; refuse a folder holding shards of a run with another fingerprint.

    Raises:
        RunFolderMismatch: the folder's ``run.json`` differs and ``overwrite`` is not set
            (with ``overwrite``, the earlier shards are deleted).
    """
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        differ = [key for key in expected if earlier.get(key) != expected[key]]
        if differ and not overwrite:
            raise RunFolderMismatch(f"{run_dir} holds shards scored with different {', '.join(differ)}; use a new "
                                    "--out folder, or --overwrite to discard them")
        if differ:
            shutil.rmtree(run_dir / SHARDS_FOLDER, ignore_errors=True)
    (run_dir / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
    write_json(path, expected)


def _input_columns(table: pd.DataFrame, image_column: str, checkpoints: list[str]) -> pd.DataFrame:
    """The input columns carried to the output: image bytes left out, clashing names prefixed ``input:``."""
    outputs = set(ROW_COLUMNS) | {column_of(field, spec) for field in PER_CHECKPOINT for spec in checkpoints}
    keep = table.drop(columns=["uid"])
    if any(isinstance(value, bytes) for value in keep[image_column]):
        keep = keep.drop(columns=[image_column])
    return keep.rename(columns={name: f"input:{name}" for name in keep.columns if name in outputs})


def _arrow_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Columns pyarrow cannot type (mixed str / numbers from webdataset json) become strings."""
    for name in table.columns:
        if table[name].dtype == object:
            try:
                pa.array(table[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table[name] = table[name].map(lambda value: value if value is None else str(value))
    return table


class ShardScorer:
    """Loads the checkpoints once and scores whole shards into a run folder.

    Both executors use it: the local one calls it in-process, the Ray one builds one per actor.
    Use as a context manager, or call :meth:`close`.

    Args:
        checkpoints: checkpoint specs.
        run_dir: the run folder (its ``shards/`` folder must exist: :func:`prepare_run_folder`).
        options: how to read and run (``progress`` is ignored: a shard is the unit of progress).
        uid_column: the shards' unique-id column, when they have one.
    """

    def __init__(self, checkpoints: list[str], run_dir: str | Path, options: ScoreOptions, uid_column: str = "uid"):
        self.options = replace(options, progress=False)
        self.scorer = ChunkScorer(checkpoints, self.options)
        self.run_dir = Path(run_dir)
        self.uid_column = uid_column
        self._ids: dict[str, dict[str, str]] = {}
        for spec in self.scorer.checkpoints:  # load once, up front: shard timings then exclude loading
            self.model_ids(spec)

    def __enter__(self) -> ShardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.scorer.__exit__(None, None, None)

    def model_ids(self, spec: str) -> dict[str, str]:
        """A checkpoint's ``model_key``, ``preprocess`` (a short hash) and ``preprocess_description``."""
        if spec not in self._ids:
            encoder = self.scorer.embedder(spec).encoder
            key, description = model_key(encoder, self.options.fast_decode)
            digest = hashlib.sha256(description["preprocess"].encode()).hexdigest()[:16]
            self._ids[spec] = {"model_key": key, "preprocess": digest,
                               "preprocess_description": description["preprocess"]}
        return self._ids[spec]

    def __call__(self, shard: str | Path) -> dict:
        """Score one shard; write its parquet and done-marker (or its failed-marker).

        Returns:
            The shard's record: ``shard``, ``name``, ``state`` (``done`` or ``failed``), rows,
            status counts, seconds, rows per second, where it ran, and ``error`` when it failed.
        """
        files = shard_files(self.run_dir, shard)
        started = time.perf_counter()
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            table = read_shard(shard, self.options.image_column, self.options.caption_column, self.uid_column)
        except ShardReadError as error:
            record = {"shard": str(shard), "name": shard_name(shard), "state": "failed", "error": str(error),
                      "rows": 0, "seconds": time.perf_counter() - started, **where}
            write_json(files.failed, record)
            return record
        scores = self.score_table(table)
        with atomic_path(files.scores) as tmp:
            scores.to_parquet(tmp, index=False)
        seconds = time.perf_counter() - started
        record = {"shard": str(shard), "name": shard_name(shard), "state": "done", "rows": len(scores),
                  "status_counts": scores["status"].value_counts().to_dict(), "seconds": seconds,
                  "rows_per_s": len(scores) / seconds if seconds else None, **where,
                  "checkpoints": {spec: self.model_ids(spec) for spec in self.scorer.checkpoints}}
        write_json(files.done, record)
        files.failed.unlink(missing_ok=True)
        return record

    def score_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """The output rows of one shard's samples (see the module docstring for the columns)."""
        self.scorer.options.base_dir = table.attrs.get("base_dir")
        checkpoints = self.scorer.checkpoints
        chunks = [table.iloc[rows] for rows in batches(len(table), self.options.chunk_size)]
        long = (pd.concat([self.scorer.score_chunk(chunk) for chunk in chunks], ignore_index=True) if chunks
                else pd.DataFrame(columns=list(SCORE_COLUMNS)))
        out = pd.DataFrame({"uid": table["uid"].to_numpy(), "row": np.arange(len(table))})
        out = pd.concat([out, _input_columns(table, self.options.image_column, checkpoints)], axis=1)
        first = long.drop_duplicates("row_id").set_index("row_id").reindex(range(len(table)))
        out["image_width"] = first["image_width"].astype("Int64").array
        out["image_height"] = first["image_height"].astype("Int64").array
        status = pd.Series("ok", index=range(len(table)), dtype=object)
        error = pd.Series("", index=range(len(table)), dtype=object)
        for spec in checkpoints:
            rows = long[long["checkpoint"] == spec].set_index("row_id").reindex(range(len(table)))
            for field in ("cosine", "clip_score_100", "caption_truncated", "status", "error"):
                out[column_of(field, spec)] = rows[field].to_numpy()
            out[column_of("error", spec)] = out[column_of("error", spec)].fillna("")
            ids = self.model_ids(spec)
            out[column_of("model_key", spec)], out[column_of("preprocess", spec)] = ids["model_key"], ids["preprocess"]
            failed = (status == "ok") & (rows["status"] != "ok")
            status[failed], error[failed] = rows["status"][failed], rows["error"][failed].fillna("")
        out["status"], out["error"] = status.to_numpy(), error.to_numpy()
        return _arrow_safe(out)


def read_markers(run_dir: str | Path) -> pd.DataFrame:
    """Every shard record in a run folder (done and failed markers), one row per shard."""
    folder = Path(run_dir) / SHARDS_FOLDER
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.done.json"))]
    records += [json.loads(path.read_text()) for path in sorted(folder.glob("*.failed.json"))
                if not path.with_name(path.name.replace(".failed.json", ".done.json")).exists()]
    return pd.DataFrame(records)


def scored_shards(run_dir: str | Path) -> list[Path]:
    """The scored shards' parquet files of a run folder, in input order when ``shards.csv`` gives it."""
    run_dir = Path(run_dir)
    listing = run_dir / "shards.csv"
    if listing.exists():
        names = pd.read_csv(listing, dtype=str)["name"]
        paths = [run_dir / SHARDS_FOLDER / f"{name}.parquet" for name in names]
        return [path for path in paths if path.with_name(path.stem + ".done.json").exists()]
    return sorted(path.with_name(path.name.replace(".done.json", ".parquet"))
                  for path in (run_dir / SHARDS_FOLDER).glob("*.done.json"))
