"""Faults on the Ray executor cost a retry, not the run: actors killed mid-shard, a node removed, a poison shard,
a straggler, the driver killed; each run's tables equal the local executor's, row for row, each row once.

The faults are planted by a test-only actor class (a subclass of the executor's, built by :func:`_faulty_actor`
and pickled by value, so each Ray worker gets it) that SIGKILLs its own process as the OOM killer would,
or sleeps; production code has no hook for them. Ray runs under a private ``RAY_TMPDIR``, so a test's
cluster is never joined by another process's ``ray.init()`` on this machine, nor the reverse.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from clipeval.data.shards import write_shards
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.steps import score_shards
from clipeval.layout import RunLayout
from clipeval.pipeline import executors
from clipeval.pipeline.executors import commit_attempt
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.runs.cli import main

ray = pytest.importorskip("ray")

EMBED = EmbedOptions(device="cpu", progress=False, embedding_cache=False)  # no run reads another's vectors
CHUNKS = ShardOptions(chunk_size=4)  # 3 chunks per shard of 12 rows: an attempt killed mid-shard leaves parts


@pytest.fixture(scope="module", autouse=True)
def private_ray_tmpdir():
    """Ray's sockets, logs and ``ray_current_cluster`` in a short private folder (sockets cap path lengths)."""
    folder = tempfile.mkdtemp(prefix="rayf", dir="/tmp")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    yield folder
    if previous is None:
        os.environ.pop("RAY_TMPDIR")
    else:
        os.environ["RAY_TMPDIR"] = previous
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, challenge_csv):
    """The challenge set's 48 pairs in 4 webdataset shards of 12."""
    return [str(path) for path in write_shards(read_pairs(challenge_csv), tmp_path_factory.mktemp("shards"), 4,
                                               "tar")]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, shards, tiny_specs):
    """The same shards on the local executor: what every faulty Ray run must equal."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    score_shards(run_dir, shards, [tiny_specs["hf-clip"]], CHUNKS, EMBED)
    return run_dir


@pytest.fixture(scope="module")
def cluster(private_ray_tmpdir):
    """A simulated two-node cluster (head and one worker node, one CPU each), the driver connected."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _faulty_actor(monkeypatch, marks: Path, kill_once: str = "", poison: str = "", straggle: str = "",
                  announce_s: float = 0.0):
    """Put a fault-planting subclass of the executor's actor in its place (test-only, pickled by value).

    Args:
        marks: a folder every node sees, for what the faults have done (each fault fires once, across processes).
        kill_once: the shard whose first attempt SIGKILLs its actor after its first chunk is written.
        poison: the shard that SIGKILLs every actor that starts it.
        straggle: the shard whose first attempt sleeps 120 s before scoring.
        announce_s: every attempt writes ``running-<name>-<pid>`` (its node id), then waits this long.
    """
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def first(path: Path) -> bool:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    class FaultyActor(executors._ShardActor):
        def score(self, shard, attempt):
            name = Path(shard).stem
            if announce_s:
                (marks / f"running-{name}-{os.getpid()}").write_text(self.where["node"])
                time.sleep(announce_s)
            if name == poison:
                os.kill(os.getpid(), signal.SIGKILL)
            if name == straggle and first(marks / f"straggled-{name}"):
                time.sleep(120)
            if name == kill_once and first(marks / f"killed-{name}"):
                score_rows, calls = self.scorer.score_rows, []

                def dies_at_the_second_chunk(*args, **kwargs):
                    calls.append(1)
                    if len(calls) == 2:  # the first chunk's part is written
                        os.kill(os.getpid(), signal.SIGKILL)
                    return score_rows(*args, **kwargs)

                self.scorer.score_rows = dies_at_the_second_chunk
            return super().score(shard, attempt)

    marks.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(executors, "_ShardActor", FaultyActor)


def _rows(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(path) for path in RunLayout(run_dir).scored_shards()], ignore_index=True)


def _assert_same_as_local(run_dir: Path, local_dir: Path) -> None:
    """Every shard done, the rows and scores the local executor's in the same order, each row once, no leftovers."""
    table = pd.read_csv(run_dir / "shards.csv")
    assert (table["state"] == "done").all(), table
    rows, local = _rows(run_dir), _rows(local_dir)
    assert rows["uid"].is_unique and len(rows) == 48
    pd.testing.assert_frame_equal(rows, local, check_exact=False, atol=1e-6, rtol=0)
    assert not list((run_dir / "shards").glob("*.attempts")) and not list((run_dir / "shards").glob("*.parts"))
    assert RunLayout(run_dir).is_complete


def test_an_attempt_commits_only_when_no_copy_committed_first(tmp_path):
    """Two copies of a shard finish: the first to commit wins, the second's files never replace its own."""
    layout = RunLayout(tmp_path)
    for attempt, rows in (("1", 12), ("2", 99)):
        staged = layout.shard_attempt("s", attempt)
        staged.done.parent.mkdir(parents=True)
        staged.scores.write_text(f"scores of attempt {attempt}")
        staged.done.write_text(json.dumps({"rows": rows}))
    assert commit_attempt(layout, "s", "1", done=True)
    assert not commit_attempt(layout, "s", "2", done=True)
    final = layout.shard("s")
    assert final.scores.read_text() == "scores of attempt 1" and json.loads(final.done.read_text()) == {"rows": 12}
    assert list(layout.shard_attempts("s").iterdir()) == []  # both attempts' files gone, and the lock
    (layout.shard_attempts("s") / executors.COMMIT_LOCK).write_text("3")  # a copy committing now: the lock
    staged = layout.shard_attempt("t", "4")                                 # blocks every other one
    staged.done.parent.mkdir(parents=True)
    (layout.shard_attempts("t") / executors.COMMIT_LOCK).write_text("3")
    staged.failed.write_text("{}")
    assert not commit_attempt(layout, "t", "4", done=False) and not layout.shard("t").failed.exists()


@pytest.mark.parametrize(("options", "message"), [
    (ExecutionOptions("ray", shard_retries=-1), "--shard-retries must be 0 or more, got -1"),
    (ExecutionOptions("ray", speculative_after=0.5), "--speculative-after is a multiple of the median shard's time"),
])
def test_fault_options_out_of_range_are_refused_before_ray_starts(options, message, tmp_path):
    task = executors.ShardTask(["hf:tiny"], str(tmp_path), CHUNKS, EMBED)
    with pytest.raises(ValueError, match=message):
        list(executors.run_ray([str(tmp_path / "s.tar")], task, options))


def test_an_actor_killed_mid_shard_costs_a_retry(cluster, shards, local_run, tiny_specs, tmp_path, monkeypatch):
    _faulty_actor(monkeypatch, tmp_path / "marks", kill_once="shard-00001")
    run = score_shards(tmp_path / "run", shards, [tiny_specs["hf-clip"]], CHUNKS, EMBED,
                       ExecutionOptions("ray", ray_actors=2))
    _assert_same_as_local(tmp_path / "run", local_run)
    assert run.execution["shards_retried"] == 1 and run.execution["shards_failed"] == 0
    [fault] = run.execution["faults"]
    assert fault["name"] == "shard-00001" and fault["try"] == 1
    assert fault["reason"].startswith("try 1 on node ") and "ActorDiedError" in fault["reason"]
    assert run.shards.set_index("name")["attempts"].to_dict() == {
        "shard-00000": 1, "shard-00001": 2, "shard-00002": 1, "shard-00003": 1}
    marker = json.loads((tmp_path / "run" / "shards" / "shard-00001.done.json").read_text())
    assert marker["chunks_resumed"] == 1  # the killed attempt's first chunk, reused whole


@pytest.mark.slow
def test_a_poison_shard_is_marked_failed_after_its_retries_and_the_run_goes_on(cluster, shards, local_run,
                                                                              tiny_specs, tmp_path, monkeypatch,
                                                                              capsys):
    _faulty_actor(monkeypatch, tmp_path / "marks", poison="shard-00002")
    out = tmp_path / "run"
    argv = ["score", *[arg for shard in shards for arg in ("--shards", shard)], "--checkpoint",
            tiny_specs["hf-clip"], "--out", str(out), "--executor", "ray", "--ray-actors", "2", "--chunk-size", "4",
            "--shard-retries", "1", "--device", "cpu", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "faults: 3 of 4 shards done, 1 retried, 1 failed" in err and "shard-00002" in err
    failed = json.loads((out / "shards" / "shard-00002.failed.json").read_text())
    assert failed["state"] == "failed" and failed["error"].startswith("2 attempts failed")
    assert failed["error"].count("ActorDiedError") == 2
    assert "try 1 on node " in failed["error"] and "try 2 on node " in failed["error"]
    table = pd.read_csv(out / "shards.csv").set_index("name")
    assert table["state"].to_dict() == {"shard-00000": "done", "shard-00001": "done", "shard-00002": "failed",
                                        "shard-00003": "done"}
    assert not RunLayout(out).is_complete
    local = _rows(local_run)
    rows = _rows(out)
    assert rows["uid"].is_unique
    pd.testing.assert_frame_equal(rows, local[~local["uid"].str.startswith("shard-00002/")].reset_index(drop=True),
                                  check_exact=False, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_straggler_gets_a_speculative_copy_and_the_first_to_finish_wins(cluster, shards, local_run, tiny_specs,
                                                                        tmp_path, monkeypatch):
    _faulty_actor(monkeypatch, tmp_path / "marks", straggle="shard-00000")
    started = time.perf_counter()
    run = score_shards(tmp_path / "run", shards, [tiny_specs["hf-clip"]], CHUNKS, EMBED,
                       ExecutionOptions("ray", ray_actors=2, speculative_after=2.0))
    assert time.perf_counter() - started < 100  # the straggling copy sleeps 120 s
    _assert_same_as_local(tmp_path / "run", local_run)
    assert run.execution["speculative_copies"] == 1 and run.execution["speculative_wins"] == 1
    assert run.execution["faults"] == [] and run.shards.set_index("name")["attempts"]["shard-00000"] == 2


@pytest.mark.slow
def test_a_node_removed_mid_run_costs_a_retry(cluster, shards, local_run, tiny_specs, tmp_path, monkeypatch):
    """A third one-CPU node joins the two; the worker node of a running shard is removed mid-shard, and its
    shard runs again on the node left free (the cluster is back to two nodes after)."""
    cluster.add_node(num_cpus=1)
    marks, removed = tmp_path / "marks", []
    _faulty_actor(monkeypatch, marks, announce_s=2.0)

    def remove_a_worker_node_running_a_shard():
        deadline = time.monotonic() + 300
        while not removed and time.monotonic() < deadline:
            running = {path.read_text() for path in marks.glob("running-*") if path.stat().st_size}
            for node in list(cluster.worker_nodes):
                if node.node_id in running:
                    cluster.remove_node(node)
                    removed.append(node.node_id)
                    break
            time.sleep(0.2)

    remover = threading.Thread(target=remove_a_worker_node_running_a_shard)
    remover.start()
    try:
        run = score_shards(tmp_path / "run", shards, [tiny_specs["hf-clip"]], CHUNKS, EMBED,
                           ExecutionOptions("ray", ray_actors=2))
    finally:
        removed.append(None)  # stops the remover if it found nothing
        remover.join()
    assert removed[0] is not None
    _assert_same_as_local(tmp_path / "run", local_run)
    assert run.execution["shards_retried"] == 1 and removed[0][:12] in run.execution["faults"][0]["reason"]


def _ray_processes(folder: str) -> list:
    """The processes of the Ray run under ``RAY_TMPDIR=folder`` (workers rename themselves ``ray::...``, but keep
    the environment their raylet gave them)."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("RAY_TMPDIR") == folder:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.slow
def test_a_run_whose_driver_was_killed_resumes(shards, local_run, tiny_specs, tmp_path):
    """SIGKILL to the driver, its local Ray going with it; the same command again scores only what is missing."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "clipeval", "score", *[arg for shard in shards for arg in ("--shards", shard)],
               "--checkpoint", tiny_specs["hf-clip"], "--out", str(out), "--executor", "ray", "--ray-actors", "2",
               "--chunk-size", "4", "--device", "cpu", "--no-progress"]
    ray_dir = tempfile.mkdtemp(prefix="rayd", dir="/tmp")  # its own: never the module's cluster
    env = {**os.environ, "RAY_TMPDIR": ray_dir}
    try:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 300
        while not list((out / "shards").glob("*.done.json")) and time.monotonic() < deadline:
            assert driver.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 60
        while _ray_processes(ray_dir) and time.monotonic() < deadline:
            time.sleep(1)
        assert not _ray_processes(ray_dir), "the killed driver's Ray outlived it"
        done = len(list((out / "shards").glob("*.done.json")))
        assert 0 < done < 4 and not RunLayout(out).is_complete
        finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert finished.returncode == 0, finished.stderr
    assert f"{done} of 4 shards already done, {4 - done} to score" in finished.stderr
    _assert_same_as_local(out, local_run)
    assert (~pd.read_csv(out / "shards.csv")["this_run"]).sum() == done
