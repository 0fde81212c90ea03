"""Benchmark the offline default: generate the scenes, train the dual encoder, evaluate on test.

Measures what issue 3's targets name: training wall time on this machine (with the load
average, since the CPU may be shared), text->image HitRate@5 and MRR on the test split (all,
seen and unseen combinations), matched vs mismatched cosine with the ROC AUC, and hard-negative
accuracy per negative kind. Writes one JSON file atomically.

    .venv/bin/python bench/bench_train_dual.py

It runs with the environment's OpenMP settings, like ``make model``, and records them. On an
idle machine OpenMP's default policy is fastest; when other processes share the cores its
active waiting makes PyTorch crawl, and ``OMP_WAIT_POLICY=PASSIVE`` is the better choice (it
made the 14-epoch training 1.4x slower on an idle machine here).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from clipeval.atomic import write_json
from clipeval.data.scenes import generate_scenes
from clipeval.eval.scenes_benchmark import evaluate_scenes
from clipeval.jobs.manifest import git_commit
from clipeval.models.dual import read_history
from clipeval.models.registry import load_encoder
from clipeval.paths import project_relative
from clipeval.train.dual import train_dual
from clipeval.train.options import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=RESULTS / "train_dual_work", help="scenes and model folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_dual.json", help="result JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"git_commit": git_commit(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__,
              "loadavg_start": os.getloadavg()}

    started, cpu = time.perf_counter(), cpu_seconds()
    scenes = generate_scenes(args.work / "scenes")
    result["generate"] = {"wall_s": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu}

    started, cpu = time.perf_counter(), cpu_seconds()
    model_dir = train_dual(scenes, args.work / "dual", TrainConfig(epochs=args.epochs, progress=False))
    result["train"] = {"wall_s": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu,
                       "loadavg_end": os.getloadavg(), "history": read_history(model_dir)}

    started = time.perf_counter()
    evaluation = evaluate_scenes(load_encoder(f"dual:{model_dir}", device="cpu"), scenes, "test")
    result["evaluate"] = {"wall_s": time.perf_counter() - started,
                          "retrieval_text_to_image": evaluation["retrieval"].to_dict("index"),
                          "match_scores": evaluation["match_scores"],
                          "hard_negatives": evaluation["hard_negatives"].to_dict("records")}
    result["loadavg_end"] = os.getloadavg()
    write_json(args.out, project_relative(result))
    retrieval = evaluation["retrieval"]
    print(f"train {result['train']['wall_s'] / 60:.2f} min (load {result['loadavg_start'][0]:.1f} -> "
          f"{result['loadavg_end'][0]:.1f}); test HitRate@5 {retrieval.loc['all', 'hit_rate@5']:.3f}, "
          f"MRR {retrieval.loc['all', 'mrr']:.3f}; AUC {evaluation['match_scores']['auc']:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
