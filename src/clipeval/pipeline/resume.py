"""The resume rule and input identity of a scoring run, importable without torch (a re-run of a finished run
answers without loading any model library).

The rule (docs/sharded-runs.md, "The resume rule"): a unit is done exactly when its file exists and records the
input it was made from; a shard changed under the same name is scored again, one only copied or touched is not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_json
from clipeval.data.shards import shard_name
from clipeval.embed.options import EMBEDDING_VERSION, EmbedOptions
from clipeval.file_identity import file_identity, matches
from clipeval.layout import RunLayout
from clipeval.pipeline.options import ShardOptions


@dataclass
class TableShard:
    """A pairs table scored as one shard (``score --pairs``): its name, rows and the folder of relative paths."""

    name: str
    table: pd.DataFrame
    base_dir: str | None = None

    def __str__(self) -> str:
        return self.name


ShardInput = str | Path | TableShard


def input_name(shard: ShardInput) -> str:
    """The name a shard's outputs are filed under."""
    return shard.name if isinstance(shard, TableShard) else shard_name(shard)


def check_shard_names(shards: list[ShardInput]) -> None:
    """Refuse two shards whose outputs would share a name (same file name in two folders)."""
    seen: dict[str, ShardInput] = {}
    for shard in shards:
        name = input_name(shard)
        if name in seen:
            raise ValueError(f"two shards would write the same output {name}.parquet: {seen[name]} and {shard}; "
                             "rename one, or run each folder into its own run folder")
        seen[name] = shard


def input_identity(shard: ShardInput) -> dict | None:
    """What a shard's markers record of its input: a table's :func:`table_identity`, a file's
    :func:`~clipeval.file_identity.file_identity`; ``None`` for a file that cannot be read."""
    if isinstance(shard, TableShard):
        return table_identity(shard)
    try:
        return file_identity(shard)
    except OSError:
        return None


def _same_input(recorded: dict | None, shard: ShardInput) -> dict | None:
    """The input's identity now if it is the one ``recorded`` (refreshed when only its stat fingerprint moved)."""
    if isinstance(shard, TableShard):
        return recorded if recorded is not None and recorded == table_identity(shard) else None
    return matches(recorded, shard)


def is_done(layout: RunLayout, shard: ShardInput) -> bool:
    """The resume rule: a shard is done when its done-marker exists and records this input.

    A marker whose input is the same file with a new stat fingerprint (copied, touched) is
    refreshed with it, so the next check is a stat again.
    """
    marker = layout.shard(input_name(shard)).done
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    recorded = record.get("input") if isinstance(record, dict) else None
    current = _same_input(recorded, shard)
    if current is None:
        return False
    if current != recorded:
        write_json(marker, {**record, "input": current})
    return True


def run_fingerprint(checkpoints: list[str], shards: ShardOptions, embed: EmbedOptions) -> dict:
    """What makes two runs' rows the same: checkpoints, columns, chunks and the options that change the scores."""
    return {"checkpoints": list(dict.fromkeys(checkpoints)), "image_column": shards.image_column,
            "caption_column": shards.caption_column, "uid_column": shards.uid_column,
            "chunk_size": shards.chunk_size, "batch_size": embed.batch_size, "precision": embed.precision,
            "fast_decode": embed.fast_decode, "decoder": embed.decoder, "embedding_version": EMBEDDING_VERSION}


def table_identity(shard: TableShard) -> dict:
    """What identifies a table shard's rows: a hash of its contents and the folder its relative paths are in."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(shard.table, index=True).to_numpy().tobytes()).hexdigest()
    return {"sha256": digest, "base_dir": shard.base_dir}


def read_markers(layout: RunLayout) -> pd.DataFrame:
    """Every shard record in a run folder (done and failed markers), one row per shard."""
    records = [json.loads(path.read_text()) for path in sorted(layout.shards.glob("*.done.json"))]
    records += [json.loads(path.read_text()) for path in sorted(layout.shards.glob("*.failed.json"))
                if not path.with_name(path.name.replace(".failed.json", ".done.json")).exists()]
    return pd.DataFrame(records)
