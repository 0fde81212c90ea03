"""Benchmark the finder's exact and approximate search: recall@10, latency, bytes per vector, build time.

    python bench/bench_finder.py [--sizes 10000 100000 1000000 --dim 512 --threads 2
                                  --out bench/results/finder.json]

The vectors are synthetic, not CLIP embeddings: clustered unit vectors of CLIP ViT-B's dimension
(512), seeded. Every vector shares a common direction (as CLIP embeddings do), belongs to one of
32 topics and, inside it, to one of n/500 clusters of lognormal sizes; an item is its cluster's
centre plus a random direction 0.8-1.4 times as long (per cluster), renormalised (cosine 0.58-0.78
to its centre). Queries, with their own seed: half are a cluster centre (chosen by size), half an
item, each plus a random direction of the same length, renormalised (cosine about 0.7 to it);
recall is reported for both halves and together.

For each size: exact search (:func:`clipeval.finder.ann.exact_search`, float32 vectors in memory,
and float16 as stored on disk) and the approximate index :func:`clipeval.finder.ann.ann_params`
picks for that size under the default memory budget (what ``choose_ann`` builds above
``EXACT_UP_TO``; at smaller sizes the rule uses exact search, and the index is built anyway for the
comparison). Recall@10 of the approximate top 10 against the exact top 10 over all queries; p50/p99
latency of one query at a time (search alone, after warm-up); bytes per vector (the saved index
file over n; exact: the float32 vectors in memory, the float16 ones on disk); build time (training,
adding and the nprobe calibration) with its peak RSS. Then exact search latency over prefixes of
the largest set, to place ``EXACT_UP_TO``. faiss and torch thread counts are set and recorded.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bench_pipeline import machine_info, save_report
from bench_retrieval import measure
from clipeval.finder import ann
from clipeval.paths import PROJECT_ROOT

TOPICS = 32
ITEMS_PER_CLUSTER = 500
CHUNK = 65_536
LATENCY_LIMIT_MS = 20.0  # the target for one query; exact search is used while its p50 stays under it
EXACT_CURVE = (10_000, 25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 400_000, 1_000_000)


def _normalise(array: np.ndarray) -> np.ndarray:
    array /= np.linalg.norm(array, axis=1, keepdims=True)
    return array


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return _normalise(rng.standard_normal(shape, dtype=np.float32))


def clustered_embeddings(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors, centres, cluster sizes)``: n unit vectors as described in the module docstring."""
    rng = np.random.default_rng(seed)
    n_clusters = max(8, n // ITEMS_PER_CLUSTER)
    common = _unit_noise(rng, (1, dim))
    topics = _unit_noise(rng, (TOPICS, dim))
    centres = _normalise(0.5 * common + 0.6 * topics[rng.integers(TOPICS, size=n_clusters)]
                         + 0.6 * _unit_noise(rng, (n_clusters, dim)))
    weights = rng.lognormal(0.0, 1.0, size=n_clusters)
    sizes = rng.multinomial(n, weights / weights.sum())
    spread = rng.uniform(0.8, 1.4, size=n_clusters).astype(np.float32)
    labels = rng.permutation(np.repeat(np.arange(n_clusters), sizes))
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        chunk = labels[start:start + CHUNK]
        block = centres[chunk] + spread[chunk, None] * _unit_noise(rng, (len(chunk), dim))
        vectors[start:start + CHUNK] = _normalise(block)
    return vectors, centres, sizes


def queries_near(vectors: np.ndarray, centres: np.ndarray, sizes: np.ndarray, count: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` queries (half near centres, half near items) and a boolean mask of the centre ones."""
    rng = np.random.default_rng(seed + 1_000_003)
    half = count // 2
    bases = np.concatenate([centres[rng.choice(len(centres), size=half, p=sizes / sizes.sum())],
                            vectors[rng.choice(len(vectors), size=count - half, replace=False)]])
    queries = _normalise(bases + _unit_noise(rng, bases.shape))
    return np.ascontiguousarray(queries, dtype=np.float32), np.arange(count) < half


def latencies_ms(search, queries: np.ndarray, warmup: int = 5) -> dict:
    """p50/p99/mean milliseconds of ``search(one_query)`` over the queries, one at a time."""
    for query in queries[:warmup]:
        search(query[None])
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query[None])
        times.append((time.perf_counter() - started) * 1000)
    times = np.asarray(times)
    return {"queries": len(times), "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "mean_ms": float(times.mean())}


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> tuple[dict, np.ndarray | None]:
    """Exact and approximate search at one size; returns the record and (for the largest size) the vectors."""
    started = time.perf_counter()
    vectors, centres, sizes = clustered_embeddings(n, args.dim, args.seed)
    queries, near_centre = queries_near(vectors, centres, sizes, args.queries, args.seed)
    record = {"n": n, "clusters": len(centres), "generate_s": time.perf_counter() - started}
    chosen = ann.choose_ann(n, args.dim, args.memory_budget)
    record["rule"] = "exact" if chosen is None else chosen["type"]

    started = time.perf_counter()
    _, truth = ann.exact_search(vectors, queries, args.k)
    record["exact_batch_s"] = time.perf_counter() - started
    timed = queries[:args.latency_queries]
    exact = {"bytes_per_vector_ram_float32": 4 * args.dim, "bytes_per_vector_disk_float16": 2 * args.dim,
             "float32": latencies_ms(partial(ann.exact_search, vectors, k=args.k), timed)}
    half = vectors.astype(np.float16)
    exact["float16"] = latencies_ms(partial(ann.exact_search, half, k=args.k), timed[:args.latency_queries // 2])
    del half
    record["exact"] = exact

    measure_index = partial(approximate_search, vectors=vectors, queries=queries, truth=truth,
                            near_centre=near_centre, args=args, workdir=workdir)
    record["approximate"] = approximate = measure_index(ann.ann_params(n, args.dim, args.memory_budget), sweep=True)
    print(f"n={n:,}: exact p50 {exact['float32']['p50_ms']:.2f} ms; {_describe(approximate)}", flush=True)
    if n == max(args.sizes):
        # The rule's other branches: the indexes smaller memory budgets choose at the largest size.
        record["smaller_budgets"] = []
        for mib in args.smaller_budgets_mib:
            variant = measure_index(ann.ann_params(n, args.dim, mib * 2**20), sweep=False)
            record["smaller_budgets"].append({"memory_budget_mib": mib, **variant})
            print(f"n={n:,}, budget {mib} MiB: {_describe(variant)}", flush=True)
    return record, vectors


def approximate_search(params: dict, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                       near_centre: np.ndarray, args: argparse.Namespace, workdir: Path, sweep: bool) -> dict:
    """Build the index ``params`` describe; its build time and memory, file size, recall and latency."""
    build: dict = {}
    with measure(build):
        index = ann.build_ann(vectors, params, progress=args.progress)
    path = workdir / "index.faiss"
    index.save(path)
    found = index.search(queries, args.k)[1]
    timed = queries[:args.latency_queries]
    result = {
        "params": dict(index.params), "build_s": build["wall_s"], "build_cpu_s": build["cpu_s"],
        "build_peak_rss_increase_bytes": build["peak_rss_increase_bytes"],
        "file_bytes": path.stat().st_size, "bytes_per_vector": path.stat().st_size / len(vectors),
        "recall_at_10": ann.neighbour_recall(found, truth),
        "recall_at_10_centre_queries": ann.neighbour_recall(found[near_centre], truth[near_centre]),
        "recall_at_10_item_queries": ann.neighbour_recall(found[~near_centre], truth[~near_centre]),
        "latency": latencies_ms(partial(index.search, k=args.k), timed)}
    path.unlink()
    path.with_suffix(".json").unlink()
    if sweep:
        calibrated, result["nprobe_sweep"] = index.params["nprobe"], []
        for nprobe in sorted({max(1, calibrated // 4), max(1, calibrated // 2), calibrated,
                              min(index.params["nlist"], calibrated * 2)}):
            index.set_search_parameter(nprobe)
            result["nprobe_sweep"].append({
                "nprobe": nprobe, "recall_at_10": ann.neighbour_recall(index.search(queries, args.k)[1], truth),
                **latencies_ms(partial(index.search, k=args.k), timed[:100])})
    del index
    gc.collect()
    return result


def _describe(result: dict) -> str:
    params = result["params"]
    return (f"{params['factory']} nprobe {params['nprobe']}: recall@10 {result['recall_at_10']:.4f}, "
            f"p50 {result['latency']['p50_ms']:.2f} ms, {result['bytes_per_vector']:.0f} B/vector, "
            f"build {result['build_s']:.0f} s")


def exact_curve(vectors: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Exact latency over prefixes of the largest set (latency does not depend on the values)."""
    curve = []
    for n in (size for size in EXACT_CURVE if size <= len(vectors)):
        prefix = vectors[:n]
        count = args.latency_queries if n <= 200_000 else args.latency_queries // 2
        entry = {"n": n, "float32": latencies_ms(partial(ann.exact_search, prefix, k=args.k),
                                                 queries[:count])}
        curve.append(entry)
        print(f"exact n={n:,}: p50 {entry['float32']['p50_ms']:.2f} ms", flush=True)
    return curve


def table(report: dict) -> str:
    lines = [f"{'n':>9}  {'search':<22}  {'recall@10':>9}  {'p50 ms':>7}  {'p99 ms':>7}  {'B/vector':>8}  "
             f"{'build s':>7}"]
    for size in report["sizes"]:
        exact, approximate = size["exact"], size["approximate"]
        lines.append(f"{size['n']:>9,}  {'exact (float32)':<22}  {1:>9.3f}  {exact['float32']['p50_ms']:>7.2f}  "
                     f"{exact['float32']['p99_ms']:>7.2f}  {exact['bytes_per_vector_ram_float32']:>8}  {'-':>7}")
        name = f"{approximate['params']['factory']}/{approximate['params']['nprobe']}"
        lines.append(f"{size['n']:>9,}  {name:<22}  {approximate['recall_at_10']:>9.3f}  "
                     f"{approximate['latency']['p50_ms']:>7.2f}  {approximate['latency']['p99_ms']:>7.2f}  "
                     f"{approximate['bytes_per_vector']:>8.0f}  {approximate['build_s']:>7.0f}")
    for variant in report["sizes"][-1].get("smaller_budgets", []):
        name = f"{variant['params']['factory']}/{variant['params']['nprobe']}"
        lines.append(f"{report['sizes'][-1]['n']:>9,}  {name:<22}  {variant['recall_at_10']:>9.3f}  "
                     f"{variant['latency']['p50_ms']:>7.2f}  {variant['latency']['p99_ms']:>7.2f}  "
                     f"{variant['bytes_per_vector']:>8.0f}  {variant['build_s']:>7.0f}")
    lines.append(f"exact p50 crosses {report['latency_limit_ms']:.0f} ms after {report['exact_under_limit_up_to']:,} "
                 f"vectors; EXACT_UP_TO = {report['exact_up_to']:,}; target met: {report['target']['met']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000, help="queries for recall")
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="faiss (OpenMP) and torch threads")
    parser.add_argument("--memory-budget", type=int, default=ann.DEFAULT_MEMORY_BUDGET_BYTES, help="bytes")
    parser.add_argument("--smaller-budgets-mib", type=int, nargs="*", default=[1024],
                        help="at the largest size, also the indexes these budgets choose")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "finder.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ann.set_threads(args.threads)
    faiss = ann._faiss()
    machine = {**machine_info(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
               "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0}
    report = {"config": vars(args), "machine": machine,
              "data": "synthetic clustered unit vectors (not CLIP embeddings), see bench/bench_finder.py",
              "sizes": []}
    started = time.perf_counter()
    vectors = None
    with tempfile.TemporaryDirectory() as workdir:
        for n in sorted(args.sizes):
            del vectors
            gc.collect()
            record, vectors = bench_size(n, args, Path(workdir))
            report["sizes"].append(record)
    queries = queries_near(vectors, vectors[:64], np.ones(64), args.latency_queries, args.seed + 7)[0]
    report["exact_latency_curve"] = curve = exact_curve(vectors, queries, args)
    del vectors
    under = [entry["n"] for entry in curve if entry["float32"]["p50_ms"] <= LATENCY_LIMIT_MS]
    report["latency_limit_ms"] = LATENCY_LIMIT_MS
    report["exact_under_limit_up_to"] = max(under, default=0)
    report["exact_up_to"] = ann.EXACT_UP_TO
    largest = report["sizes"][-1]
    approximate = largest["approximate"]
    report["target"] = {"n": largest["n"], "recall_at_10": 0.95, "p50_ms": LATENCY_LIMIT_MS,
                        "met": bool(approximate["recall_at_10"] >= 0.95
                                    and approximate["latency"]["p50_ms"] < LATENCY_LIMIT_MS)}
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
