"""Executors: the same :class:`~clipeval.pipeline.scorer.ShardScorer` in this process or on Ray.

* ``local``: this process scores the shards one after another, each checkpoint loaded once;
* ``ray``: a pool of ``ray_actors`` Ray actors (Ray Core), each building one scorer (its checkpoints
  loaded once) and scoring whole shards; a shard goes to whichever actor finishes first, so a slow
  shard does not hold the others back. ``address`` joins a running cluster (``ray.init(address=...)``;
  ``auto`` finds the local one); without it a local Ray is started for the run and stopped after it.

Both yield one record per shard as shards finish (done or failed), and the rows and scores
they write are the same. Both put their start-up in ``timings``: ``startup_s`` (until every
scorer is ready: for Ray the actors' processes, imports and checkpoints) and ``checkpoint_load_s``
(the checkpoints alone); Ray's also ``cluster_start_s`` (``ray.init``: a local cluster started, or
a running one joined). On a cluster every node needs this package installed (with its ``ray``
extra) and the run folder on storage every node can write (NFS or similar). Ray is imported here
only, and only when the ``ray`` executor runs; the scorer (torch, the model libraries) only where it
runs, so Ray's driver never imports torch (2 s of a 2-core machine's start-up before ``ray.init``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator

from clipeval.extras import require
from clipeval.pipeline.options import ExecutionOptions, ShardTask
from clipeval.pipeline.resume import ShardInput, TableShard


def run_local(shards: list[ShardInput], task: ShardTask, rows_done: Callable[[int], None] | None = None,
              timings: dict | None = None) -> Iterator[dict]:
    """Score the shards in this process, in order; ``rows_done`` hears each scored chunk's row count."""
    if not shards:
        return
    from clipeval.pipeline.scorer import ShardScorer  # torch and the model libraries: where the scorer runs

    started = time.perf_counter()
    with ShardScorer(**vars(task)) as scorer:
        if timings is not None:
            timings["startup_s"] = timings["checkpoint_load_s"] = time.perf_counter() - started
        for shard in shards:
            yield scorer(shard, rows_done)


class _ShardActor:
    """One actor of the pool: a :class:`ShardScorer` built once, scoring whole shards by path.

    A scorer that cannot be built (a mistyped checkpoint) is kept as its error, which :meth:`startup`
    returns, so the driver raises the error itself (one line) instead of Ray's report of a dead actor.
    """

    def __init__(self, task: ShardTask):
        from clipeval.pipeline.scorer import ShardScorer  # in the actor: Ray's driver never imports torch

        started = time.perf_counter()
        try:
            self.scorer, self.error = ShardScorer(**vars(task)), None
        except Exception as error:  # noqa: BLE001 - raised again by the driver, see startup()
            self.scorer, self.error = None, error
        self.startup_s = time.perf_counter() - started

    def startup(self) -> tuple[float, Exception | None]:
        """Seconds the actor took to build its scorer (load or identify its checkpoints), and its error if any."""
        return self.startup_s, self.error

    def score(self, shard: str) -> dict:
        return self.scorer(shard)


# Ray's notices that are not about this run: the token authentication it enables by default.
_RAY_NOTICES = ("ray._private.authentication.authentication_token_setup",)


def run_ray(shards: list[ShardInput], task: ShardTask, options: ExecutionOptions, timings: dict | None = None
            ) -> Iterator[dict]:
    """Score the shard files on a Ray actor pool (see the module docstring).

    Raises:
        ValueError: fewer than one actor, or a shard that is a table in memory (not a file every actor can read).
        ImportError: Ray is not installed (the ``ray`` extra).
        Exception: what stopped an actor from building its scorer (a bad checkpoint spec...), raised here.
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

    started, cluster_start = not ray.is_initialized(), time.perf_counter()
    if started:
        ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING,
                 configure_logging=True)
    booting = time.perf_counter()
    actor_class = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor)(_ShardActor)
    actors = [actor_class.remote(task) for _ in range(min(options.ray_actors, len(shards)))]
    try:
        started_actors = ray.get([actor.startup.remote() for actor in actors])
        errors = [error for _, error in started_actors if error is not None]
        if errors:
            raise errors[0]
        if timings is not None:  # Ray's own start (or joining a cluster), then the actors': processes, imports,
            timings["cluster_start_s"] = booting - cluster_start  # checkpoints
            timings["startup_s"] = time.perf_counter() - booting
            timings["checkpoint_load_s"] = max(seconds for seconds, _ in started_actors)
        todo, running = deque(str(shard) for shard in shards), {}
        for actor in actors:  # one shard each; an actor gets its next one when it returns a record
            running[actor.score.remote(todo.popleft())] = actor
        while running:
            [finished], _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(finished)
            if todo:
                running[actor.score.remote(todo.popleft())] = actor
            yield ray.get(finished)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
