"""Executors: the same :class:`~clipeval.pipeline.scorer.ShardScorer` in this process or on Ray.

* ``local``: this process scores the shards one after another, each checkpoint loaded once;
* ``ray``: Ray Data ``map_batches`` over the list of shards (one block per shard, one shard per
  batch) with a class-based scorer on a pool of ``ray_actors`` actors, each loading its
  checkpoints once. ``address`` joins a running cluster (``ray.init(address=...)``; ``auto``
  finds the local one); without it a local Ray is started for the run and stopped after it.

Both yield one record per shard as shards finish (done or failed), and the rows and scores
they write are the same. On a cluster every node needs this package installed (with its ``ray``
extra) and the run folder on storage every node can write (NFS or similar). Ray is imported here
only, and only when the ``ray`` executor runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clipeval.embed.options import EmbedOptions
from clipeval.extras import require
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.pipeline.scorer import ShardInput, ShardScorer, TableShard


@dataclass
class ShardTask:
    """What every scorer is built from (sent to each Ray actor): ``ShardScorer(**vars(task))``."""

    checkpoints: list[str]
    run_dir: str
    shards: ShardOptions
    embed: EmbedOptions


def run_local(shards: list[ShardInput], task: ShardTask, rows_done: Callable[[int], None] | None = None
              ) -> Iterator[dict]:
    """Score the shards in this process, in order; ``rows_done`` hears each scored chunk's row count."""
    if not shards:
        return
    with ShardScorer(**vars(task)) as scorer:
        for shard in shards:
            yield scorer(shard, rows_done)


class _RayShardWorker:
    """One actor of the pool: a :class:`ShardScorer` built once, called with batches of shard paths."""

    def __init__(self, task: ShardTask):
        self.scorer = ShardScorer(**vars(task))

    def __call__(self, batch: dict) -> dict:
        return {"record": [json.dumps(self.scorer(str(shard))) for shard in batch["shard"]]}


# Ray's notices that are not about this run: the token authentication it enables by default, the progress bars
# this module turns off, the notebook widgets it would draw.
_RAY_NOTICES = ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress",
                "ray.widgets.util")


def run_ray(shards: list[ShardInput], task: ShardTask, options: ExecutionOptions) -> Iterator[dict]:
    """Score the shard files on a Ray actor pool (see the module docstring).

    Raises:
        ValueError: fewer than one actor, or a shard that is a table in memory (not a file every actor can read).
        ImportError: Ray is not installed (the ``ray`` extra).
    """
    if options.ray_actors < 1:
        raise ValueError(f"the ray executor needs at least one actor, got {options.ray_actors}")
    if any(isinstance(shard, TableShard) for shard in shards):
        raise ValueError("the ray executor scores shard files; a pairs table runs on the local executor")
    if not shards:
        return
    for name in _RAY_NOTICES:  # before the import: some are logged while Ray is imported
        logging.getLogger(name).setLevel(logging.ERROR)
    ray = require("ray", "ray", "the ray executor")
    require("ray.data", "ray", "the ray executor")

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        items = ray.data.from_items([{"shard": str(shard)} for shard in shards], override_num_blocks=len(shards))
        scored = items.map_batches(_RayShardWorker, batch_size=1, fn_constructor_kwargs={"task": task},
                                   compute=ray.data.ActorPoolStrategy(size=min(options.ray_actors, len(shards))),
                                   num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None)
        for row in scored.iter_rows():
            yield json.loads(row["record"])
    finally:
        if started:
            ray.shutdown()
