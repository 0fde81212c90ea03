"""Executors for sharded runs: the same :class:`~clipeval.eval.sharded.ShardScorer` in one process or on Ray.

* ``local``: one process scores the shards one after another, each checkpoint loaded once;
* ``ray``: Ray Data ``map_batches`` over the list of shards (one block per shard, one shard per
  batch) with a class-based scorer on an actor pool of ``num_workers`` actors, each loading its
  checkpoints once. ``address`` joins a running cluster (``ray.init(address=...)``; ``auto``
  finds the local one); without it a local Ray is started for the run and stopped after it.

Both yield one record per shard as shards finish (done or failed), and the rows and scores
they write are the same. On a cluster every node needs this package installed and the run
folder on storage every node can write (NFS or similar).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipeval.eval.sharded import ShardScorer

EXECUTORS = ("local", "ray")


@dataclass
class ShardTask:
    """What every scorer is built from (sent to each Ray actor): ``ShardScorer(**vars(task))``."""

    checkpoints: list[str]
    run_dir: str
    options: object
    uid_column: str = "uid"


@dataclass
class RayOptions:
    """How the Ray executor runs.

    Attributes:
        num_workers: actors in the pool (each loads the checkpoints once).
        cpus_per_worker: CPUs Ray reserves per actor (its torch threads follow).
        gpus_per_worker: GPUs per actor (0 on a CPU machine; 1 per GPU on a GPU box; a fraction
            packs several actors on one GPU).
        address: a cluster to join (``auto``, ``ray://host:10001``...); None starts a local Ray.
    """

    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    address: str | None = None

    def decode_workers(self, requested: int | None) -> int | None:
        """Decode processes per actor: as requested, else the actor's CPUs but one (the model's thread).

        An actor sees the whole node's cores, so the pipeline's own default (spare cores up to 8 on
        CUDA) would start that many in every actor of a node; the actor's reservation is its share.
        """
        return requested if requested is not None else max(0, int(self.cpus_per_worker) - 1)


def run_local(shards: list[Path], task: ShardTask) -> Iterator[dict]:
    """Score the shards in this process, in order."""
    if not shards:
        return
    with ShardScorer(**vars(task)) as scorer:
        for shard in shards:
            yield scorer(shard)


class _RayShardWorker:
    """One actor of the pool: a :class:`ShardScorer` built once, called with batches of shard paths."""

    def __init__(self, task: ShardTask):
        self.scorer = ShardScorer(**vars(task))

    def __call__(self, batch: dict) -> dict:
        return {"record": [json.dumps(self.scorer(str(shard))) for shard in batch["shard"]]}


def run_ray(shards: list[Path], task: ShardTask, options: RayOptions) -> Iterator[dict]:
    """Score the shards on a Ray actor pool (see the module docstring).

    Raises:
        ValueError: fewer than one worker.
    """
    if options.num_workers < 1:
        raise ValueError(f"the ray executor needs at least one worker, got {options.num_workers}")
    if not shards:
        return
    import ray
    import ray.data

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
                                   compute=ray.data.ActorPoolStrategy(size=min(options.num_workers, len(shards))),
                                   num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None)
        for row in scored.iter_rows():
            yield json.loads(row["record"])
    finally:
        if started:
            ray.shutdown()
