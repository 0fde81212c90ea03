"""Score one shard whole into one output parquet and a done-marker: the unit of work of every scoring run.

Inside a shard, rows are scored in chunks kept under ``shards/NAME.parts/`` until the shard is done, so a run
killed at any point resumes where it stopped: a unit is done exactly when its file exists, each written
atomically (a part, then the shard's parquet, then its marker; :mod:`clipeval.pipeline.resume`).
docs/sharded-runs.md ("Outputs") gives the output columns and the markers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from clipeval.atomic import atomic_path, write_json
from clipeval.data.shards import ShardReadError, read_shard, shard_uids
from clipeval.embed.engine import batches
from clipeval.embed.options import EmbedOptions
from clipeval.eval.scoring import ChunkScorer
from clipeval.file_identity import STAT_FIELDS
from clipeval.layout import PER_CHECKPOINT, ROW_COLUMNS, SCORE_COLUMNS, RunLayout, ShardFiles, score_column
from clipeval.pipeline.options import ShardOptions
from clipeval.pipeline.resume import ShardInput, TableShard, input_identity, input_name


def _input_columns(table: pd.DataFrame, image_column: str, checkpoints: list[str]) -> pd.DataFrame:
    """The input columns carried to the output: image bytes left out, clashing names prefixed ``input:``."""
    outputs = set(ROW_COLUMNS) | {score_column(name, spec) for name in PER_CHECKPOINT for spec in checkpoints}
    keep = table
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
    """Loads the checkpoints once and scores whole shards into a run folder that
    :func:`clipeval.pipeline.run.score_run` claimed; the local executor uses one, the Ray executor one per actor.

    A context manager, or call :meth:`close`. The run passes ``embed.progress`` off: a chunk is the unit of progress.
    """

    def __init__(self, checkpoints: list[str], run_dir: str | Path, shards: ShardOptions, embed: EmbedOptions):
        self.shards = shards
        self.scorer = ChunkScorer(checkpoints, embed, shards.image_column, shards.caption_column)
        self.layout = RunLayout(run_dir)
        self._ids: dict[str, dict[str, str]] = {}
        self.chunks_total = self.chunks_resumed = 0
        for spec in self.scorer.checkpoints:  # identify (load, unless the cache knows it) up front: shard timings
            self.model_ids(spec)              # then exclude loading

    def __enter__(self) -> ShardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.scorer.__exit__(None, None, None)

    def model_ids(self, spec: str) -> dict[str, str]:
        """A checkpoint's ``model_key``, ``preprocess`` (a short hash) and ``preprocess_description``."""
        if spec not in self._ids:
            key, description = self.scorer.embedder(spec).identify()
            digest = hashlib.sha256(description["preprocess"].encode()).hexdigest()[:16]
            self._ids[spec] = {"model_key": key, "preprocess": digest,
                               "preprocess_description": description["preprocess"]}
        return self._ids[spec]

    def _read(self, shard: ShardInput) -> tuple[pd.DataFrame, pd.Series, str | None]:
        """The shard's rows, their uids and the folder their relative image paths are in."""
        if isinstance(shard, TableShard):
            return shard.table, shard_uids(shard.table, shard.name, self.shards.uid_column), shard.base_dir
        table = read_shard(shard, self.shards.image_column, self.shards.caption_column, self.shards.uid_column,
                           self.shards.max_member_bytes, self.shards.limits)
        return table.drop(columns=["uid"]), table["uid"], table.attrs.get("base_dir")

    def __call__(self, shard: ShardInput, progress=None, files: ShardFiles | None = None) -> dict:
        """Score one shard (resuming its finished chunks); write its parquet and done-marker, or its failed-marker.

        Args:
            progress: called with each chunk's row count as it is scored (a progress bar's ``update``).
            files: where to write (default: the run folder's files of the shard; the Ray executor gives each
                attempt its own, :meth:`~clipeval.layout.RunLayout.shard_attempt`, and commits one).

        Returns:
            The shard's record: ``shard``, ``name``, ``state`` (``done`` or ``failed``), rows,
            status counts, chunks (and how many resumed), seconds, rows per second, where it ran,
            the checkpoints' ids and this process's scoring stats so far; ``error`` when it failed.
        """
        name = input_name(shard)
        files = files or self.layout.shard(name)
        started = time.perf_counter()
        where = {"host": socket.gethostname(), "pid": os.getpid()}
        identity = input_identity(shard)  # before reading: a file changed while read is seen as changed next time
        try:
            table, uids, base_dir = self._read(shard)
            if identity is None:
                raise ShardReadError(f"{shard}: the file could not be hashed (it vanished or cannot be read)")
        except ShardReadError as error:
            record = {"shard": str(shard), "name": name, "state": "failed", "error": str(error), "rows": 0,
                      "seconds": time.perf_counter() - started, **where}
            write_json(files.failed, record)
            return record
        _parts_for(files, identity)
        scores, chunks, resumed = self._score_in_chunks(table, uids, base_dir, files, progress)
        with atomic_path(files.scores) as tmp:
            scores.to_parquet(tmp, index=False)
        seconds = time.perf_counter() - started
        record = {"shard": str(shard), "name": name, "state": "done", "input": identity, "rows": len(scores),
                  "status_counts": scores["status"].value_counts().to_dict(), "chunks": chunks,
                  "chunks_resumed": resumed, "seconds": seconds,
                  "rows_per_s": len(scores) / seconds if seconds else None,
                  **where, "checkpoints": {spec: self.model_ids(spec) for spec in self.scorer.checkpoints},
                  "stats": self.stats()}
        write_json(files.done, record)
        files.failed.unlink(missing_ok=True)
        shutil.rmtree(files.parts, ignore_errors=True)
        return record

    def _score_in_chunks(self, table, uids, base_dir, files: ShardFiles, progress) -> tuple[pd.DataFrame, int, int]:
        """Every chunk's output rows, read from its part when an interrupted run finished it."""
        self.scorer.base_dir = base_dir
        slices = list(batches(len(table), self.shards.chunk_size))
        parts, resumed = [], 0
        for number, rows in enumerate(slices):
            part = files.parts / f"chunk-{number:06d}.parquet"
            if part.exists():
                resumed += 1
                parts.append(pd.read_parquet(part))
                continue
            parts.append(self.score_rows(table.iloc[rows], uids.iloc[rows], rows.start))
            with atomic_path(part) as tmp:
                parts[-1].to_parquet(tmp, index=False)
            if progress is not None:
                progress(rows.stop - rows.start)
        self.chunks_total, self.chunks_resumed = self.chunks_total + len(slices), self.chunks_resumed + resumed
        if resumed:
            print(f"{files.scores.stem}: {resumed} of {len(slices)} chunks reused from an interrupted run",
                  file=sys.stderr)
        scores = pd.concat(parts, ignore_index=True) if parts else self.score_rows(table, uids, 0)
        return scores, len(slices), resumed

    def score_rows(self, table: pd.DataFrame, uids: pd.Series, first_row: int) -> pd.DataFrame:
        """The output rows of consecutive samples of a shard (docs/sharded-runs.md, "Outputs")."""
        checkpoints = self.scorer.checkpoints
        index = range(len(table))
        long = (self.scorer.score_chunk(table.reset_index(drop=True)) if len(table)
                else pd.DataFrame(columns=list(SCORE_COLUMNS)))
        out = pd.DataFrame({"uid": uids.to_numpy(), "row": np.arange(first_row, first_row + len(table))})
        out = pd.concat([out, _input_columns(table.reset_index(drop=True), self.shards.image_column, checkpoints)],
                        axis=1)
        first = long.drop_duplicates("row_id").set_index("row_id").reindex(index)
        out["image_width"] = first["image_width"].astype("Int64").array
        out["image_height"] = first["image_height"].astype("Int64").array
        status = pd.Series("ok", index=index, dtype=object)
        error = pd.Series("", index=index, dtype=object)
        for spec in checkpoints:
            rows = long[long["checkpoint"] == spec].set_index("row_id").reindex(index)
            for name in ("cosine", "clip_score_100", "caption_truncated", "status", "error"):
                out[score_column(name, spec)] = rows[name].to_numpy()
            out[score_column("error", spec)] = out[score_column("error", spec)].fillna("")
            ids = self.model_ids(spec)
            out[score_column("model_key", spec)] = ids["model_key"]
            out[score_column("preprocess", spec)] = ids["preprocess"]
            failed = (status == "ok") & (rows["status"] != "ok")
            status[failed], error[failed] = rows["status"][failed], rows["error"][failed].fillna("")
        out["status"], out["error"] = status.to_numpy(), error.to_numpy()
        return _arrow_safe(out)

    def stats(self) -> dict:
        """This process's scoring stats so far (:meth:`~clipeval.eval.scoring.ChunkScorer.stats`)."""
        return self.scorer.stats(self.chunks_total, self.chunks_resumed)


def _parts_for(files: ShardFiles, identity: dict) -> None:
    """Keep an interrupted run's chunks only when they were scored from this input; record it for the next run."""
    recorded = files.parts / "input.json"
    if files.parts.exists():
        try:
            earlier = json.loads(recorded.read_text())
        except (OSError, json.JSONDecodeError):
            earlier = None
        if _content(earlier) != _content(identity):
            shutil.rmtree(files.parts)
    if not recorded.exists():
        write_json(recorded, identity)


def _content(identity: dict | None) -> dict | None:
    """An input identity without its stat fingerprint: what the content is, not where or when it was written."""
    return None if not isinstance(identity, dict) else {key: value for key, value in identity.items()
                                                         if key not in STAT_FIELDS}
