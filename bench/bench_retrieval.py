"""Benchmark block-wise retrieval against one bare matrix product + top-k of the same size.

    python bench/bench_retrieval.py [--queries 25000 --items 100000 --dim 512 --k 10
                                     --out bench/results/retrieval.json]

Random unit vectors (seeded), one random relevant item per query. Times
:func:`clipeval.metrics.ranking.retrieve` (running top-k and exact ranks, memory bounded by the
blocks) and, as the reference, ``torch.topk(queries @ items.T, k)`` on the full matrix (done in
row chunks instead, and said so in the JSON, when the full matrix does not fit in available
memory). Reports wall and CPU seconds, peak RSS sampled every 10 ms during each phase, the wall and
CPU time ratios, agreement of the two top-k lists (and, with the full matrix, of the relevant
items' ranks with ranks counted in it) and the load average (the machine may be shared).
The JSON is written atomically.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import torch

from clipeval.atomic import write_json
from clipeval.metrics.ranking import ITEM_BLOCK, QUERY_BLOCK, retrieve
from clipeval.metrics.retrieval import summarize_ranks
from clipeval.paths import PROJECT_ROOT, project_relative

FULL_MATRIX_HEADROOM = 1.3  # run the full reference only if available memory >= this x its size
REFERENCE_ROW_CHUNK = 4096


@contextmanager
def measure(record: dict):
    """Fill ``record`` with wall/CPU seconds and the peak RSS (sampled every 10 ms) of the block."""
    process = psutil.Process()
    record["rss_before_bytes"] = peak = process.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.01):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        record["wall_s"] = time.perf_counter() - wall
        record["cpu_s"] = time.process_time() - cpu
        stop.set()
        sampler.join()
        record["peak_rss_bytes"] = max(peak, process.memory_info().rss)
        record["peak_rss_increase_bytes"] = record["peak_rss_bytes"] - record["rss_before_bytes"]


def random_unit_vectors(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)


def reference_topk(queries: torch.Tensor, items: torch.Tensor, k: int) -> torch.Tensor:
    """The reference without the full matrix: matrix product + top-k in row chunks."""
    return torch.cat([torch.topk(queries[i:i + REFERENCE_ROW_CHUNK] @ items.T, k, dim=1).indices
                      for i in range(0, len(queries), REFERENCE_ROW_CHUNK)])


def ranks_in_full_matrix(scores: np.ndarray, relevant_item: np.ndarray) -> np.ndarray:
    """Rank of each query's one relevant item by the tie rule's definition, row chunk by chunk:
    1 + #higher scores + #equal scores at a lower index."""
    ranks = np.empty(len(scores), dtype=np.int64)
    columns = np.arange(scores.shape[1])
    for i in range(0, len(scores), REFERENCE_ROW_CHUNK):
        rows, item = scores[i:i + REFERENCE_ROW_CHUNK], relevant_item[i:i + REFERENCE_ROW_CHUNK]
        own = rows[np.arange(len(rows)), item][:, None]
        tied_before = ((rows == own) & (columns[None, :] < item[:, None])).sum(axis=1)
        ranks[i:i + REFERENCE_ROW_CHUNK] = 1 + (rows > own).sum(axis=1) + tied_before
    return ranks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=25_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--query-block", type=int, default=QUERY_BLOCK)
    parser.add_argument("--item-block", type=int, default=ITEM_BLOCK)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "retrieval.json")
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(args.seed)
    queries = random_unit_vectors(args.queries, args.dim, generator)
    items = random_unit_vectors(args.items, args.dim, generator)
    pairs = np.stack([np.arange(args.queries),
                      torch.randint(args.items, (args.queries,), generator=generator).numpy()], axis=1)
    report = {
        "config": vars(args),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "numpy": np.__version__, "platform": platform.platform(),
                    "memory_total_bytes": psutil.virtual_memory().total,
                    "loadavg_start": os.getloadavg()},
    }

    with torch.inference_mode():
        with measure(report.setdefault("blockwise", {})):
            result = retrieve(queries, items, pairs, k=args.k, query_block=args.query_block,
                              item_block=args.item_block, progress=args.progress)
        report["blockwise"]["summary"] = summarize_ranks(result.ranks)
        gc.collect()

        full_bytes = 4 * args.queries * args.items
        available = psutil.virtual_memory().available
        full = available >= FULL_MATRIX_HEADROOM * full_bytes
        reference = report.setdefault("reference", {})
        reference.update(mode="full_matrix" if full else f"row_chunks_of_{REFERENCE_ROW_CHUNK}",
                         full_matrix_bytes=full_bytes, available_bytes_before=available)
        with measure(reference):
            if full:
                matrix = queries @ items.T
                reference_indices = torch.topk(matrix, args.k, dim=1).indices.numpy()
            else:
                reference_indices = reference_topk(queries, items, args.k).numpy()
        if full:  # not timed: check the block-wise ranks against the full matrix
            blockwise_ranks = np.concatenate(result.ranks)
            report["ranks_identical_fraction"] = float(
                np.mean(ranks_in_full_matrix(matrix.numpy(), pairs[:, 1]) == blockwise_ranks))
            del matrix
        gc.collect()

    report["time_ratio_blockwise_over_reference"] = report["blockwise"]["wall_s"] / reference["wall_s"]
    # CPU seconds are steadier than wall seconds when other processes share the cores.
    report["cpu_time_ratio_blockwise_over_reference"] = report["blockwise"]["cpu_s"] / reference["cpu_s"]
    report["topk_lists_identical_fraction"] = float(
        np.mean((np.sort(reference_indices, axis=1) == np.sort(result.topk_indices, axis=1)).all(axis=1)))
    report["process_ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["machine"]["loadavg_end"] = os.getloadavg()
    report = project_relative(report)
    write_json(args.out, report)
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
