"""Benchmark sharded scoring as a user runs it: ``clipeval score --shards`` from the shell, local vs Ray.

    python bench/bench_sharded.py [--shards 4] [--pairs-per-shard 800] [--repeats 1] [--out bench/results/sharded.json]

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
"""

from __future__ import annotations

import argparse
import json
import os
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--pairs-per-shard", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs per executor and model; the fastest is kept")
    parser.add_argument("--models", default="dual,vit_b32", help="comma-separated: dual, vit_b32")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "sharded.json")
    args = parser.parse_args(argv)
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
        for model in args.models.split(","):
            spec = builders[model](temp / model)
            report["models"][model] = compare(spec, shards, temp / f"runs-{model}", args.batch_size, args.repeats)
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
