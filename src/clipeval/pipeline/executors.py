"""Executors: the same :class:`~clipeval.pipeline.scorer.ShardScorer` in this process (``local``) or on a Ray
actor pool that survives faults (``ray``). docs/sharded-runs.md describes both, the faults a Ray run survives
and the start-up timings.

Ray is imported here only, and only when the ``ray`` executor runs; the scorer (torch, the model libraries)
only where it runs, so Ray's driver never imports torch (2 s of a 2-core machine's start-up before ``ray.init``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import statistics
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clipeval.atomic import write_json
from clipeval.extras import require
from clipeval.layout import RunLayout
from clipeval.pipeline.options import ExecutionOptions, ShardTask
from clipeval.pipeline.resume import ShardInput, TableShard, input_name


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


def commit_attempt(layout: RunLayout, name: str, attempt: str, done: bool) -> bool:
    """Commit an attempt's files (its parquet and done-marker, or its failed-marker) as the shard's, unless a copy
    committed first; return whether this attempt did.

    Only the attempt holding the shard's ``commit.lock`` (created exclusively, as NFS also does) moves files, and
    it moves none when the shard's done-marker exists: the first attempt to commit wins, the done-marker is
    the commit point, and a later copy's files are discarded, never written over the winner's.
    """
    staged, final = layout.shard_attempt(name, attempt), layout.shard(name)
    lock = layout.shard_attempts(name) / COMMIT_LOCK
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another copy is committing
        committed = False
    else:
        try:
            os.write(handle, attempt.encode())
            os.close(handle)
            committed = not final.done.exists()
            if committed and done:
                os.replace(staged.scores, final.scores)
                os.replace(staged.done, final.done)
                final.failed.unlink(missing_ok=True)
            elif committed:
                os.replace(staged.failed, final.failed)
        finally:
            lock.unlink()
    shutil.rmtree(staged.done.parent, ignore_errors=True)
    return committed


class _ShardActor:
    """One actor of the pool: a :class:`ShardScorer` built once, scoring whole shards by path.

    A scorer that cannot be built (a mistyped checkpoint) is kept as its error, which :meth:`startup`
    returns, so the driver raises the error itself (one line) instead of Ray's report of a dead actor.
    """

    def __init__(self, task: ShardTask):
        import ray

        from clipeval.pipeline.scorer import ShardScorer  # in the actor: Ray's driver never imports torch

        started = time.perf_counter()
        self.where = {"host": socket.gethostname(), "pid": os.getpid(),
                      "node": ray.get_runtime_context().get_node_id()}
        try:
            self.scorer, self.error = ShardScorer(**vars(task)), None
        except Exception as error:  # noqa: BLE001 - raised again by the driver, see startup()
            self.scorer, self.error = None, error
        self.startup_s = time.perf_counter() - started

    def startup(self) -> tuple[float, Exception | None, dict]:
        """Seconds the actor took to build its scorer, its error if any, and where it runs (host, pid, node)."""
        return self.startup_s, self.error, self.where

    def score(self, shard: str, attempt: str) -> dict:
        """Score a shard into this attempt's own files and commit them; ``committed``: whether this copy won."""
        name, layout = input_name(shard), self.scorer.layout
        record = self.scorer(shard, files=layout.shard_attempt(name, attempt))
        return {**record, "committed": commit_attempt(layout, name, attempt, record["state"] == "done")}


# Ray's notices that are not about this run: the token authentication it enables by default.
_RAY_NOTICES = ("ray._private.authentication.authentication_token_setup",)


def run_ray(shards: list[ShardInput], task: ShardTask, options: ExecutionOptions, timings: dict | None = None
            ) -> Iterator[dict]:
    """Score the shard files on a Ray actor pool that survives faults (docs/sharded-runs.md, "Faults").

    Besides the start-up, ``timings`` gets ``faults`` (every failed attempt: shard, which try, reason) and
    ``speculative_copies`` / ``speculative_wins``.

    Raises:
        ValueError: fewer than one actor, negative retries, a speculation factor under 1, or a shard that is a
            table in memory (not a file every actor can read).
        ImportError: Ray is not installed (the ``ray`` extra).
        RuntimeError: actors keep dying before they are ready.
        Exception: what stopped an actor from building its scorer (a bad checkpoint spec...), raised here.
    """
    if options.ray_actors < 1:
        raise ValueError(f"the ray executor needs at least one actor, got {options.ray_actors}")
    if options.shard_retries < 0:
        raise ValueError(f"--shard-retries must be 0 or more, got {options.shard_retries}")
    if options.speculative_after is not None and options.speculative_after < 1:
        raise ValueError(f"--speculative-after is a multiple of the median shard's time, at least 1; "
                         f"got {options.speculative_after}")
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
    timings = {} if timings is None else timings
    timings["cluster_start_s"] = time.perf_counter() - cluster_start  # Ray's own start, or joining a cluster
    pool = _ActorPool(ray, task, options, [str(shard) for shard in shards], timings)
    try:
        yield from pool.run()
    finally:
        pool.close()
        if started:
            ray.shutdown()


COMMIT_LOCK = "commit.lock"
SPECULATION_CHECK_S = 0.5  # how often the driver looks for stragglers while it waits


@dataclass
class _Attempt:
    """One copy of a shard running on an actor: ``number`` names its files (unique in the run), ``ordinal`` is
    which try of its shard it is."""

    shard: str
    number: str
    ordinal: int
    actor: object
    started: float
    speculative: bool = False


class _ActorPool:
    """The Ray executor's driver: starts actors, hands out shards, retries failed attempts, copies stragglers."""

    def __init__(self, ray, task: ShardTask, options: ExecutionOptions, shards: list[str], timings: dict):
        self.ray, self.task, self.options, self.timings = ray, task, options, timings
        self.layout = RunLayout(task.run_dir)
        self.actor_class = ray.remote(num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor,
                                      max_restarts=0)(_ShardActor)  # the pool replaces actors: it counts the faults
        self.shards, self.todo, self.unfinished = shards, deque(shards), set(shards)
        self.live: set = set()                        # actors started and not known dead
        self.starting: dict = {}                      # startup reference -> actor
        self.idle: list = []
        self.running: dict = {}                       # score reference -> _Attempt
        self.where: dict = {}                         # actor -> host, pid, node
        self.reasons: dict[str, list[str]] = defaultdict(list)  # shard -> its failed attempts' reasons
        self.attempts: Counter = Counter()
        self.speculated: set[str] = set()
        self.durations: list[float] = []              # seconds of the shards finished, dispatch to answer
        self.numbers = itertools.count(1)
        self.died_starting = 0
        self.booting = time.perf_counter()
        self.startup_seconds: list[float] = []
        timings.update(faults=[], speculative_copies=0, speculative_wins=0)
        self.first_actors = {self._launch() for _ in range(self._target())}

    def run(self) -> Iterator[dict]:
        """Each shard's record as it finishes: done (the winning copy's) or failed (after its retries)."""
        wait = SPECULATION_CHECK_S if self.options.speculative_after else None
        while self.unfinished:
            ready, _ = self.ray.wait([*self.starting, *self.running], num_returns=1, timeout=wait)
            for ref in ready:
                if ref in self.starting:
                    self._ready(ref)
                else:
                    yield from self._returned(ref)
            while len(self.live) < self._target():
                self._launch()
            self._dispatch()

    def close(self) -> None:
        """Stop every actor; remove the attempts' files and a done shard's chunks a late copy left."""
        for actor in self.live:
            self.ray.kill(actor)
        for shard in self.shards:
            name = input_name(shard)
            shutil.rmtree(self.layout.shard_attempts(name), ignore_errors=True)
            if self.layout.shard(name).done.exists():
                shutil.rmtree(self.layout.shard(name).parts, ignore_errors=True)

    def _target(self) -> int:
        return min(self.options.ray_actors, len(self.unfinished))

    def _launch(self):
        actor = self.actor_class.remote(self.task)
        self.live.add(actor)
        self.starting[actor.startup.remote()] = actor
        return actor

    def _drop(self, actor) -> None:
        """Forget an actor (dead, or running a copy that lost) and make sure it is stopped."""
        self.live.discard(actor)
        if actor in self.idle:
            self.idle.remove(actor)
        self.ray.kill(actor)

    def _ready(self, ref) -> None:
        actor = self.starting.pop(ref)
        try:
            seconds, error, where = self.ray.get(ref)
        except self.ray.exceptions.RayError as died:  # its process or its node died while it started
            self._drop(actor)
            self.died_starting += 1
            if self.died_starting > self.options.ray_actors * (self.options.shard_retries + 1):
                raise RuntimeError(f"{self.died_starting} Ray actors died before they were ready; the last: "
                                   f"{_one_line(died)}") from died
            seconds = None
        else:
            if error is not None:
                raise error
            self.where[actor] = where
            self.idle.append(actor)
        if actor in self.first_actors:  # start-up: until the last first actor is ready (or gone), as far as the
            # run waited: one that was still starting when the last shard finished is not counted
            self.first_actors.discard(actor)
            self.startup_seconds += [] if seconds is None else [seconds]
            self.timings["startup_s"] = time.perf_counter() - self.booting
            self.timings["checkpoint_load_s"] = max(self.startup_seconds, default=None)

    def _returned(self, ref) -> Iterator[dict]:
        attempt = self.running.pop(ref)
        try:
            record = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:  # the scorer raised: its actor lives on
            self.idle.append(attempt.actor)
            yield from self._failed(attempt, getattr(error, "cause", None) or error)
            return
        except self.ray.exceptions.RayError as error:  # the actor is gone: its process, or its node
            self._drop(attempt.actor)
            yield from self._failed(attempt, error)
            return
        self.idle.append(attempt.actor)
        if attempt.shard not in self.unfinished:
            return
        if record.pop("committed"):
            self.durations.append(time.perf_counter() - attempt.started)
            self.timings["speculative_wins"] += attempt.speculative
            yield self._finish(attempt.shard, record)
        elif not self._copies(attempt.shard):  # the lock was held by a copy that died while committing
            yield from self._failed(attempt, RuntimeError("its commit was blocked by a copy that died"))

    def _copies(self, shard: str) -> int:
        return sum(attempt.shard == shard for attempt in self.running.values())

    def _failed(self, attempt: _Attempt, error: BaseException) -> Iterator[dict]:
        """Record a failed attempt; retry its shard, or mark it failed when its retries are spent."""
        shard, name = attempt.shard, input_name(attempt.shard)
        where = self.where.get(attempt.actor, {})
        reason = (f"try {attempt.ordinal} on node {str(where.get('node', 'unknown'))[:12]} "
                  f"({where.get('host', '?')}, pid {where.get('pid', '?')}): {_one_line(error)}")
        self.reasons[shard].append(reason)
        self.timings["faults"].append({"name": name, "try": attempt.ordinal, "reason": reason})
        if shard not in self.unfinished or self._copies(shard):  # another copy finished it, or still may
            return
        files = self.layout.shard(name)
        if files.done.exists():  # it committed, then its actor died before answering
            yield self._finish(shard, json.loads(files.done.read_text()))
            return
        (self.layout.shard_attempts(name) / COMMIT_LOCK).unlink(missing_ok=True)  # no copy is alive to hold it
        failures = len(self.reasons[shard])
        if failures > self.options.shard_retries:
            record = {"shard": shard, "name": name, "state": "failed", "rows": 0,
                      "error": f"{failures} attempts failed: " + "; ".join(self.reasons[shard]),
                      "seconds": time.perf_counter() - attempt.started, **where}
            write_json(files.failed, record)
            yield self._finish(shard, record)
            return
        print(f"shard {name}: {reason}; retrying ({failures} of {self.options.shard_retries} retries)",
              file=sys.stderr)
        self.todo.appendleft(shard)

    def _finish(self, shard: str, record: dict) -> dict:
        """A shard is finished: stop the copies of it still running; its record with its attempts."""
        self.unfinished.discard(shard)
        for ref, other in list(self.running.items()):
            if other.shard == shard:
                del self.running[ref]
                self._drop(other.actor)
        return {**record, "attempts": self.attempts[shard], "faults": self.reasons.pop(shard, [])}

    def _dispatch(self) -> None:
        """Queued shards to idle actors; with the queue empty, copies of stragglers (``speculative_after``)."""
        while self.idle and self.todo:
            self._start(self.idle.pop(0), self.todo.popleft())
        if self.options.speculative_after and self.idle and not self.todo and self.durations:
            limit = self.options.speculative_after * statistics.median(self.durations)
            now = time.perf_counter()
            late = sorted((attempt.started, attempt.shard) for attempt in self.running.values()
                          if now - attempt.started > limit and attempt.shard not in self.speculated)
            for _, shard in late[:len(self.idle)]:
                self.speculated.add(shard)
                self.timings["speculative_copies"] += 1
                self._start(self.idle.pop(0), shard, speculative=True)

    def _start(self, actor, shard: str, speculative: bool = False) -> None:
        self.attempts[shard] += 1
        number = str(next(self.numbers))
        self.running[actor.score.remote(shard, number)] = _Attempt(shard, number, self.attempts[shard], actor,
                                                                   time.perf_counter(), speculative)


def _one_line(error: BaseException, limit: int = 400) -> str:
    """An exception as one line (Ray's reports of a dead actor span several), cut to ``limit`` characters."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= limit else text[:limit - 1] + "…"
