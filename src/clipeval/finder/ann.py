"""Exact and approximate nearest-neighbour search over an index's L2-normalised vectors.

Scores are inner products of unit vectors (cosine similarity), higher first. The rule:

* up to :data:`EXACT_UP_TO` vectors, search is exact (:func:`exact_search`, the block-wise
  top-k of :func:`clipeval.metrics.ranking.top_k`): ``bench/bench_finder.py`` measures exact search
  of one query against float32 vectors growing linearly with their number, bandwidth-bound, and
  :data:`EXACT_UP_TO` is the largest measured size whose p50 stays under 20 ms (docs/finder.md);
* above it, :func:`choose_ann` picks a faiss inverted-file (IVF) index from the collection size and
  a memory budget: ``IVF<nlist>,Flat`` (the float32 vectors themselves, 4·dim + 8 bytes a vector)
  when they fit the budget, else ``IVF<nlist>,SQ8`` (one byte a dimension), else
  ``OPQ<m>,IVF<nlist>,PQ<m>`` (m bytes a vector, the largest m that fits). ``nlist`` is the power of
  two nearest 4·√n (with at least 39 training vectors per list); ``nprobe`` (how many lists a query
  scans) is calibrated when the index is built: the smallest power of two whose recall@10 against
  exact search, on calibration queries, reaches :data:`TARGET_RECALL` plus
  :data:`CALIBRATION_MARGIN`.

IVF rather than HNSW when the floats fit: on the 2-core benchmark machine an IVF-Flat index over a
million vectors trains and fills in about a minute, answers one query in under a millisecond (the
20 ms target is met with room) and its recall is tuned by one number, ``nprobe``, after building;
HNSW's graph would cost about 2·M·4 more bytes a vector for a latency a local page does not need
(not benchmarked). ``build_ann`` still builds ``hnsw_flat`` when asked for it explicitly.

faiss is the ``finder`` extra, imported only here, on use. Where faiss has GPU support
(``faiss.get_num_gpus() > 0``, the ``faiss-gpu`` build) an IVF index is trained and filled on the
GPUs and copied back to the CPU to be saved and searched; that path is untested here (no GPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from clipeval.atomic import atomic_path, write_json
from clipeval.extras import require
from clipeval.metrics.ranking import top_k
from clipeval.progress import progress_bar

EXACT_UP_TO = 100_000  # vectors; exact search at or below this size (bench/bench_finder.py, docs/finder.md)
DEFAULT_MEMORY_BUDGET_BYTES = 4096 * 2**20  # clipeval index --ann-memory-mb 4096
TARGET_RECALL = 0.95  # recall@10 against exact search that nprobe is calibrated for
CALIBRATION_MARGIN = 0.02  # calibrate for TARGET_RECALL + this, on queries that are not the users'
CALIBRATION_QUERIES = 500
CALIBRATION_K = 10
MIN_POINTS_PER_LIST = 39  # faiss's k-means warns below this many training vectors per centroid
TRAIN_POINTS_PER_LIST = 40  # training sample: this many vectors per list (the whole collection when smaller)
ADD_CHUNK = 65_536  # vectors added per step (the progress bar's unit)
PQ_BYTES = (64, 32, 16, 8)  # PQ code sizes tried, largest first (each must divide dim)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
SEED = 0
PLATEAU = 0.002  # a doubling of nprobe that gains less recall than this ends the calibration


def _faiss():
    return require("faiss", "finder", "approximate search")


def set_threads(threads: int) -> None:
    """faiss's OpenMP thread count (training, adding, searching)."""
    _faiss().omp_set_num_threads(int(threads))


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, block-wise (memory bounded by the blocks, not by queries × vectors).

    Args:
        vectors: (N, D) L2-normalised vectors, N >= 1; float32, or float16 (e.g. a memory-mapped
            ``vectors/<name>.npy``), converted one block at a time.
        queries: (Q, D) or (D,) L2-normalised queries.
        k: how many per query (capped at N).

    Returns:
        ``(scores, positions)``: (Q, min(k, N)) float32 and int64, best first; equal scores are
        ordered by position.
    """
    queries = np.asarray(queries, dtype=np.float32)
    return top_k(queries.reshape(1, -1) if queries.ndim == 1 else queries, vectors, k)


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest 4·√n, with >= 39 vectors a list (at least 1)."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    while nlist > 1 and n < MIN_POINTS_PER_LIST * nlist:
        nlist //= 2
    return nlist


def ann_params(n: int, dim: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> dict:
    """The approximate index :func:`choose_ann` picks for ``n`` vectors of ``dim``, whatever n is.

    Raises:
        ValueError: not even the smallest code (8 bytes a vector) fits the budget.
    """
    if n < 1 or dim < 1:
        raise ValueError(f"need n >= 1 and dim >= 1, got {n}, {dim}")
    nlist = nlist_for(n)
    centroids = 4 * dim * nlist
    common = {"metric": "inner_product", "n": int(n), "dim": int(dim), "nlist": nlist,
              "train_size": int(min(n, TRAIN_POINTS_PER_LIST * nlist)), "target_recall": TARGET_RECALL,
              "memory_budget_bytes": int(memory_budget_bytes)}
    # Each vector also costs its 8-byte id in its inverted list.
    candidates = [("ivf_flat", f"IVF{nlist},Flat", 4 * dim), ("ivf_sq8", f"IVF{nlist},SQ8", dim)]
    candidates += [("ivf_pq", f"OPQ{m},IVF{nlist},PQ{m}", m) for m in PQ_BYTES if dim % m == 0 and m < dim]
    for kind, factory, code_bytes in candidates:
        estimate = n * (code_bytes + 8) + centroids
        if estimate <= memory_budget_bytes:
            return {"type": kind, "factory": factory, **common, "code_bytes": code_bytes,
                    "estimated_bytes": int(estimate)}
    raise ValueError(f"{n:,} vectors of dim {dim} do not fit a memory budget of {memory_budget_bytes:,} bytes "
                     "even as 8-byte PQ codes: raise the budget")


def choose_ann(n: int, dim: int, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> dict | None:
    """``None`` (exact search) up to :data:`EXACT_UP_TO` vectors, else :func:`ann_params`."""
    if n <= EXACT_UP_TO:
        return None
    return ann_params(n, dim, memory_budget_bytes)


def hnsw_params(n: int, dim: int) -> dict:
    """An HNSW-flat index's parameters (never chosen by the rule; for comparison and explicit use)."""
    return {"type": "hnsw_flat", "factory": f"HNSW{HNSW_M},Flat", "metric": "inner_product", "n": int(n),
            "dim": int(dim), "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "target_recall": TARGET_RECALL,
            "code_bytes": 4 * dim}


class AnnIndex:
    """A faiss index over positions ``0..n-1`` of the vectors it was built from, and its parameters."""

    def __init__(self, index, params: dict):
        self.index = index
        self.params = params
        self._apply_search_parameter()

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def _apply_search_parameter(self) -> None:
        faiss = _faiss()
        if self.params["type"] == "hnsw_flat":
            if "ef_search" in self.params:
                self.index.hnsw.efSearch = int(self.params["ef_search"])
        elif "nprobe" in self.params:
            faiss.extract_index_ivf(self.index).nprobe = int(self.params["nprobe"])

    def set_search_parameter(self, value: int) -> None:
        """Set ``nprobe`` (IVF) or ``ef_search`` (HNSW), the recall/latency knob, and record it in params."""
        self.params["ef_search" if self.params["type"] == "hnsw_flat" else "nprobe"] = int(value)
        self._apply_search_parameter()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, positions)``: (Q, min(k, ntotal)) float32 and int64, best first.

        An IVF search that scans fewer than k vectors pads with position -1 (score -inf): drop them.
        """
        queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1, self.params["dim"]))
        k = min(int(k), self.ntotal)
        if k < 1 or not len(queries):
            return np.empty((len(queries), max(k, 0)), np.float32), np.empty((len(queries), max(k, 0)), np.int64)
        scores, positions = self.index.search(queries, k)
        scores = scores.astype(np.float32, copy=False)
        scores[positions < 0] = -np.inf
        return scores, positions.astype(np.int64, copy=False)

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` (``faiss.write_index``) and its parameters to ``path`` with ``.json``."""
        path = Path(path)
        with atomic_path(path) as temp:
            _faiss().write_index(self.index, str(temp))
        write_json(path.with_suffix(".json"), self.params)

    @classmethod
    def load(cls, path: str | Path) -> AnnIndex:
        """Read an index written by :meth:`save`.

        Raises:
            ValueError: the parameters do not describe the index (dimension or size differ).
        """
        faiss, path = _faiss(), Path(path)
        params = json.loads(path.with_suffix(".json").read_text())
        index = faiss.read_index(str(path))
        if index.d != params["dim"] or index.ntotal != params["n"]:
            raise ValueError(f"{path}: the index holds {index.ntotal} vectors of dim {index.d}, its parameters "
                             f"say {params['n']} of dim {params['dim']}")
        return cls(index, params)


def build_ann(vectors: np.ndarray, params: dict, progress: bool = True,
              calibration_queries: np.ndarray | None = None) -> AnnIndex:
    """Build the index ``params`` describe over ``vectors`` and calibrate its search parameter.

    IVF indexes are trained on a random sample of ``params["train_size"]`` vectors, then filled in
    chunks of :data:`ADD_CHUNK` (a progress bar). ``nprobe`` (IVF) or ``ef_search`` (HNSW) is then set
    to the smallest power of two whose recall@10 against :func:`exact_search` on the calibration
    queries is at least ``target_recall`` + :data:`CALIBRATION_MARGIN` (or the largest tried). The
    calibration queries default to :data:`CALIBRATION_QUERIES` random vectors of the collection,
    each mixed with a random direction of equal length (cosine ≈ 0.7 to its vector); pass real
    queries (caption embeddings) when there are some. ``params`` gains the calibration's numbers.

    Args:
        vectors: (N, D) float32 L2-normalised vectors; positions in it are what searches return.
        params: from :func:`choose_ann`, :func:`ann_params` or :func:`hnsw_params`.
        progress: show the progress bar while adding.
        calibration_queries: (Q, D) L2-normalised queries for the calibration.
    """
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    params = {**params, "n": int(n), "dim": int(dim), "faiss": faiss.__version__}
    rng = np.random.default_rng(SEED)
    index = faiss.index_factory(dim, params["factory"], faiss.METRIC_INNER_PRODUCT)
    if params["type"] == "hnsw_flat":
        index.hnsw.efConstruction = int(params["ef_construction"])
    on_gpu = params["type"] != "hnsw_flat" and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if on_gpu:  # untested here: no GPU
        index = faiss.index_cpu_to_all_gpus(index)
    params["built_on"] = "gpu" if on_gpu else "cpu"
    if not index.is_trained:
        sample = np.sort(rng.choice(n, size=min(n, params.get("train_size", n)), replace=False))
        index.train(vectors[sample])
    with progress_bar(total=n, unit="vector", desc=f"ann {params['type']}", disable=not progress) as bar:
        for start in range(0, n, ADD_CHUNK):
            index.add(vectors[start:start + ADD_CHUNK])
            bar.update(min(ADD_CHUNK, n - start))
    if on_gpu:
        index = faiss.index_gpu_to_cpu(index)
    built = AnnIndex(index, params)
    _calibrate(built, vectors, calibration_queries, rng)
    return built


def calibration_queries_from(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random vectors, each plus a random direction of the same length, renormalised."""
    chosen = vectors[np.sort(rng.choice(len(vectors), size=min(count, len(vectors)), replace=False))]
    noise = rng.standard_normal(chosen.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = chosen.astype(np.float32) + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def neighbour_recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (rows of positions; -1 in ``found`` never matches)."""
    hits = sum(len(np.intersect1d(row[row >= 0], expected)) for row, expected in zip(found, truth))
    return hits / truth.size if truth.size else 1.0


def _calibrate(index: AnnIndex, vectors: np.ndarray, queries: np.ndarray | None, rng: np.random.Generator) -> None:
    queries = (calibration_queries_from(vectors, CALIBRATION_QUERIES, rng) if queries is None
               else np.asarray(queries, dtype=np.float32))
    k = min(CALIBRATION_K, len(vectors))
    _, truth = exact_search(vectors, queries, k)
    goal = index.params["target_recall"] + CALIBRATION_MARGIN
    limit = index.params["nlist"] if index.params["type"] != "hnsw_flat" else 4096
    value, tried = 1, {}
    while True:
        index.set_search_parameter(value)
        tried[value] = neighbour_recall(index.search(queries, k)[1], truth)
        if tried[value] >= goal or value >= limit:
            break
        if value >= 8 and tried[value] - tried[value // 2] < PLATEAU:
            # Compressed codes (SQ8, PQ) cap recall below the goal: scanning more lists stops helping.
            index.set_search_parameter(value // 2)
            break
        value *= 2
    index.params["calibration"] = {"queries": len(queries), "k": k, "goal": goal,
                                   "recall_by_value": {str(key): round(r, 4) for key, r in tried.items()}}
