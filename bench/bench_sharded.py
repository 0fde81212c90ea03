"""Benchmark sharded scoring as a user runs it: ``clipeval score --shards`` from the shell, local vs Ray.

    python bench/bench_sharded.py [--shards 4] [--pairs-per-shard 800] [--repeats 1] [--faults] [--out PATH]

Webdataset shards of distinct 640x480 photo-like JPEGs (one caption each; built in a temporary
folder) are scored by a fresh ``python -m clipeval score --shards ...`` process with
``--executor local`` (one process, every core), with ``--executor ray --ray-actors 2`` (two
actors of one CPU each, a local Ray started and stopped by the command) and with the same Ray
options joining a cluster already running (``--address auto``; ``ray start --head`` before the
run, as a cluster is started once for many jobs, its start timed apart and ``ray stop`` after),
for two models at their real size, random init: the dual encoder (decode-bound) and ViT-B/32
(model-bound). The three run alternately into fresh run folders, embedding cache off.

Per run the end-to-end wall time from the shell is split with the run's own records
(``sharded_stats.json``, ``shards.csv``):

* ``process_s``: the process (start, imports, reading the shards' list, the run's tables; for Ray
  its shutdown): end-to-end minus the executor's wall;
* ``cluster_start_s``: Ray's own start (``ray.init`` of a local cluster, or joining the running one;
  0 for local); ``ray_start_s``: ``ray start --head`` before a run joining a running cluster;
* ``startup_s``: the executor's start-up until every scorer is ready (for Ray the actors'
  processes, imports and checkpoints), of which ``checkpoint_load_s`` the checkpoints;
* ``overhead_per_shard_s``: what a shard cost beyond its own work, ``(executor wall - startup -
  in-shard seconds / processes) / shards`` (scheduling, markers, idle actors at the end);
* rows/s end to end and while scoring (``rows / (executor wall - cluster start - startup)``).

The ratios Ray ÷ local (each Ray variant) are taken per model on the fastest run of each. Writes the JSON atomically
with paths relative to the project, and prints a table.

``--faults`` measures instead what a fault costs (``bench/results/sharded_faults.json``): the dual encoder on the
same shards, two one-CPU actors on a simulated cluster (``ray.cluster_utils.Cluster``: a driver-only head and
three one-CPU worker nodes, a fresh one per run, under a private ``RAY_TMPDIR``), scored by ``score_shards`` (what
``score --shards`` calls) in this process, with no fault, with one actor SIGKILLed, and with the worker node of
one busy actor removed, each fault when a shard's first chunk part is written (mid-shard); the variants
alternate ``--repeats`` times. The overhead is the executor's wall time (``sharded_stats.json``) minus the
no-fault median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import build_dual, build_hf_vit_b32, machine_info, pairs_table, photos, save_report
from clipeval.data.shards import write_shards
from clipeval.paths import PROJECT_ROOT

RAY_ACTORS = 2
RUNNING_CLUSTER = "ray_running_cluster"
EXECUTORS = {"local": ["--executor", "local"], "ray": ["--executor", "ray"],
             RUNNING_CLUSTER: ["--executor", "ray", "--address", "auto"]}
RAY_VARIANTS = ("ray", RUNNING_CLUSTER)  # each compared with local
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIPEVAL_EMBEDDING_CACHE": "off"}


@contextmanager
def running_ray_cluster() -> Iterator[float]:
    """A local Ray cluster of this machine's CPUs, started by ``ray start --head`` and stopped after the block;
    yields the seconds ``ray start`` took."""
    ray = str(Path(sys.executable).with_name("ray"))
    started = time.perf_counter()
    subprocess.run([ray, "start", "--head", f"--num-cpus={os.cpu_count()}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=ENV, capture_output=True)
    try:
        yield time.perf_counter() - started
    finally:
        subprocess.run([ray, "stop"], check=True, env=ENV, capture_output=True)


def score_from_shell(executor: str, shards: list[Path], spec: str, out: Path, batch_size: int) -> dict:
    """One ``python -m clipeval score --shards`` process, timed from outside, and its run's own records."""
    inputs = [arg for shard in shards for arg in ("--shards", str(shard))]
    command = [sys.executable, "-m", "clipeval", "score", *inputs, "--checkpoint", spec, "--out", str(out),
               *EXECUTORS[executor], "--ray-actors", str(RAY_ACTORS), "--batch-size", str(batch_size),
               "--device", "cpu", "--no-progress"]
    with running_ray_cluster() if executor == RUNNING_CLUSTER else nullcontext(0.0) as ray_start:
        started = time.perf_counter()
        subprocess.run(command, check=True, env=ENV, cwd=PROJECT_ROOT, capture_output=True)
        e2e = time.perf_counter() - started
    stats = json.loads((out / "sharded_stats.json").read_text())
    table = pd.read_csv(out / "shards.csv")
    assert (table["state"] == "done").all(), table
    rows, processes = int(table["rows"].sum()), stats["processes"]
    in_shard = table["seconds"].astype(float).tolist()
    cluster = stats["cluster_start_s"] or 0.0
    scoring = stats["wall_s"] - cluster - stats["startup_s"]
    return {"executor": executor, "shards": len(shards), "rows": rows, "e2e_s": e2e, "rows_per_s_e2e": rows / e2e,
            "process_s": e2e - stats["wall_s"], "executor_wall_s": stats["wall_s"], "cluster_start_s": cluster,
            "ray_start_s": ray_start,
            "startup_s": stats["startup_s"], "checkpoint_load_s": stats["checkpoint_load_s"],
            "in_shard_s": in_shard, "rows_per_s_scoring": rows / scoring,
            "overhead_per_shard_s": (scoring - sum(in_shard) / processes) / len(shards),
            "processes_used": int(table[["host", "pid"]].drop_duplicates().shape[0])}


def compare(spec: str, shards: list[Path], out: Path, batch_size: int, repeats: int) -> dict:
    """Local and Ray alternately, ``repeats`` times each; the fastest of each and their ratios."""
    runs = {executor: [] for executor in EXECUTORS}
    for attempt in range(repeats):
        for executor in EXECUTORS:
            runs[executor].append(score_from_shell(executor, shards, spec, out / f"{executor}-{attempt}", batch_size))
    best = {executor: min(found, key=lambda run: run["e2e_s"]) for executor, found in runs.items()}
    ratios = {f"{ray}_over_local_{phase}": best[ray][f"rows_per_s_{phase}"] / best["local"][f"rows_per_s_{phase}"]
              for ray in RAY_VARIANTS for phase in ("e2e", "scoring")}
    return {"runs": runs, "best": best, **ratios}


def table(report: dict) -> str:
    lines = [f"{'model':>8} {'executor':>19} {'e2e s':>7} {'rows/s':>7} {'process s':>9} {'cluster s':>9} "
             f"{'startup s':>9} "
             f"{'scoring rows/s':>14} {'overhead s/shard':>16}"]
    for model, result in report["models"].items():
        for executor, run in result["best"].items():
            lines.append(f"{model:>8} {executor:>19} {run['e2e_s']:>7.1f} {run['rows_per_s_e2e']:>7.1f} "
                         f"{run['process_s']:>9.1f} {run['cluster_start_s']:>9.1f} {run['startup_s']:>9.1f} "
                         f"{run['rows_per_s_scoring']:>14.1f} "
                         f"{run['overhead_per_shard_s']:>+16.2f}")
        for ray in RAY_VARIANTS:
            lines.append(f"{model}: {ray} / local rows/s {result[f'{ray}_over_local_e2e']:.2f} end to end, "
                         f"{result[f'{ray}_over_local_scoring']:.2f} while scoring")
    return "\n".join(lines)


FAULTS = ("none", "actor", "node")


def _busy_actor(ray_dir: str):
    """A scorer actor of the Ray under ``ray_dir`` busy with a shard (its title says so; its environment whose)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        try:
            if ("ray::_ShardActor.score" in " ".join(process.info["cmdline"] or [])
                    and process.environ().get("RAY_TMPDIR") == ray_dir):
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def _plant(fault: str, cluster, out: Path, ray_dir: str, planted: dict) -> None:
    """Wait for a shard's first chunk part, then kill a busy actor or remove its node; note when."""
    from ray._private import ray_constants

    started = time.perf_counter()
    while not list((out / "shards").glob("*.parts/chunk-000000.parquet")):
        if time.perf_counter() - started > 900:
            return
        time.sleep(0.05)
    actor = _busy_actor(ray_dir)
    if fault == "actor":
        actor.kill()
    else:
        raylet = actor.parent().pid
        [node] = [node for node in cluster.worker_nodes
                  if node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid == raylet]
        cluster.remove_node(node)
    planted.update(at_s=time.perf_counter() - started, pid=actor.pid)


def score_with_fault(fault: str, spec: str, shards: list[Path], out: Path, batch_size: int) -> dict:
    """One run on a fresh simulated cluster, with ``fault`` planted mid-shard; its executor wall and fault record."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    from clipeval.embed.options import EmbedOptions
    from clipeval.jobs.steps import score_shards
    from clipeval.pipeline.options import ExecutionOptions

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING")
    planted: dict = {}
    planter = threading.Thread(target=_plant, args=(fault, cluster, out, os.environ["RAY_TMPDIR"], planted))
    try:
        if fault != "none":
            planter.start()
        run = score_shards(out, [str(shard) for shard in shards], [spec],
                           embed=EmbedOptions(device="cpu", progress=False, embedding_cache=False,
                                              batch_size=batch_size),
                           execution=ExecutionOptions("ray", ray_actors=RAY_ACTORS))
    finally:
        if planter.is_alive():
            planter.join()
        ray.shutdown()
        cluster.shutdown()
    stats, table = run.execution, run.shards
    assert (table["state"] == "done").all(), table
    assert fault == "none" or (planted and stats["shards_retried"] == 1), (planted, stats["faults"])
    resumed = [json.loads(path.read_text()).get("chunks_resumed", 0) for path in (out / "shards").glob("*.done.json")]
    return {"fault": fault, "wall_s": stats["wall_s"], "startup_s": stats["startup_s"],
            "fault_at_s": planted.get("at_s"), "shards_retried": stats["shards_retried"],
            "faults": stats["faults"], "chunks_resumed": sum(resumed), "rows": int(table["rows"].sum())}


def fault_overhead(spec: str, shards: list[Path], out: Path, batch_size: int, repeats: int) -> dict:
    """Every fault variant in turn, ``repeats`` rounds; medians and the overhead against no fault."""
    ray_dir = tempfile.mkdtemp(prefix="raybench", dir="/tmp")  # short: Ray's socket paths are capped
    os.environ.update(RAY_TMPDIR=ray_dir, HF_HUB_OFFLINE="1")  # the cluster's nodes take this environment
    runs = {fault: [] for fault in FAULTS}
    try:
        for attempt in range(repeats):
            for fault in FAULTS:
                runs[fault].append(score_with_fault(fault, spec, shards, out / f"{fault}-{attempt}", batch_size))
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    median = {fault: statistics.median(run["wall_s"] for run in found) for fault, found in runs.items()}
    return {"runs": runs, "median_wall_s": median,
            "overhead_s": {fault: median[fault] - median["none"] for fault in FAULTS[1:]},
            "overhead_fraction": {fault: median[fault] / median["none"] - 1 for fault in FAULTS[1:]}}


def fault_table(report: dict) -> str:
    result = report["faults"]
    lines = [f"{'fault':>6} {'median wall s':>13} {'overhead s':>10} {'overhead':>8}  runs (wall s)"]
    for fault in FAULTS:
        walls = " ".join(f"{run['wall_s']:.1f}" for run in result["runs"][fault])
        overhead = result["overhead_s"].get(fault, 0.0)
        fraction = result["overhead_fraction"].get(fault, 0.0)
        lines.append(f"{fault:>6} {result['median_wall_s'][fault]:>13.1f} {overhead:>+10.1f} {fraction:>+8.1%}  "
                     f"{walls}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--pairs-per-shard", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs per executor and model; the fastest is kept")
    parser.add_argument("--models", default="dual,vit_b32", help="comma-separated: dual, vit_b32")
    parser.add_argument("--faults", action="store_true",
                        help="measure the cost of one actor loss and one node loss instead (the dual encoder)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: bench/results/sharded.json, or sharded_faults.json with --faults")
    args = parser.parse_args(argv)
    args.out = args.out or PROJECT_ROOT / "bench" / "results" / ("sharded_faults.json" if args.faults
                                                                 else "sharded.json")
    report = {"config": {**vars(args), "ray_actors": RAY_ACTORS, "cpus_per_actor": 1,
                         "images": "distinct 640x480 JPEGs, one caption each", "models": "real size, random init",
                         "measured": "fresh `python -m clipeval score --shards` processes from the shell"},
              "machine": machine_info(), "models": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        pairs = pairs_table(photos(temp / "photos", args.shards * args.pairs_per_shard), 1)
        pairs.attrs["base_dir"] = "/"
        shards = write_shards(pairs, temp / "shards", args.shards, "tar")
        builders = {"dual": build_dual, "vit_b32": build_hf_vit_b32}
        if args.faults:
            report["config"].update(models="dual", cluster="driver-only head and 3 worker nodes of 1 CPU",
                                    measured="score_shards in this process on a simulated cluster, fault mid-shard")
            report["faults"] = fault_overhead(build_dual(temp / "dual"), shards, temp / "runs-faults",
                                              args.batch_size, args.repeats)
            return save_report(report, args.out, started, fault_table)
        for model in args.models.split(","):
            spec = builders[model](temp / model)
            report["models"][model] = compare(spec, shards, temp / f"runs-{model}", args.batch_size, args.repeats)
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
