"""Retrieval at size: block-wise scores with a running top-k and exact ranks of relevant items, on the CPU; the
(queries, items) matrix is never held whole, so memory is bounded by the block sizes (docs/retrieval.md, "At
size"). Ranks and the top-k order follow :mod:`clipeval.metrics.retrieval`'s tie rule exactly, so a relevant
item at position p of a top-k list has rank p + 1.

Floating point: a relevant item's score is computed in the same matrix product as the block of scores it is
compared with (its embedding is appended to the item block), so every comparison is between two numbers from
one BLAS call. Different calls may round the same dot product differently in the last bit (~1e-7 for unit
vectors), so ranks can differ from a sort of one full ``queries @ items.T`` only between items whose scores
differ by less than that; exact ties (duplicate embeddings, quantised scores) are resolved by index.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clipeval.progress import progress_bar

QUERY_BLOCK = 1024
ITEM_BLOCK = 32768


@dataclass(frozen=True)
class RetrievalResult:
    """The outcome of :func:`rank_queries`: (queries, k) top-k item indices and scores, best first, and per query
    the sorted ranks of its relevant items (for :func:`clipeval.metrics.retrieval.summarize_ranks`)."""

    topk_indices: np.ndarray
    topk_scores: np.ndarray
    ranks: list[np.ndarray]


def rank_queries(queries: torch.Tensor, items: torch.Tensor, relevant_pairs: np.ndarray | Sequence[tuple[int, int]],
                 k: int = 10, query_block: int = QUERY_BLOCK, item_block: int = ITEM_BLOCK,
                 progress: bool = False) -> RetrievalResult:
    """Rank all items for every query, block by block, on the CPU.

    Args:
        queries: (Q, D) L2-normalised (moved to the CPU if elsewhere).
        relevant_pairs: (P, 2) ``(query_index, item_index)``; duplicates are ignored, a query absent from it
            has no relevant item.
        query_block: queries per block (a block also holds at most ``item_block`` relevant pairs, so queries
            with very many relevant items get smaller blocks).
        item_block: items per block. Working memory is about ``4 * W * (query_block + D) + query_block *
            item_block`` bytes with ``W = item_block + relevant pairs in the block`` (~250 MB for the defaults,
            D = 512 and one relevant item per query), plus ``4 * query_block * item_block`` more when queries
            have several relevant items.

    Raises:
        ValueError: bad shapes, non-finite embeddings, pairs out of range, or k/blocks < 1.
    """
    queries, items = _check_embeddings(queries, items)
    if min(k, query_block, item_block) < 1:
        raise ValueError(f"k, query_block and item_block must be >= 1, got {k}, {query_block}, {item_block}")
    n_queries, n_items = len(queries), len(items)
    indptr, relevant_items = _to_csr(relevant_pairs, n_queries, n_items)
    k, item_block = min(k, n_items), min(item_block, n_items)
    blocks = _query_blocks(indptr, query_block, item_block)
    # Buffers reused by every block: fresh multi-megabyte allocations cost page faults each time.
    max_pairs = max((indptr[q1] - indptr[q0] for q0, q1 in blocks), default=0)
    item_buffer = torch.empty((item_block + max_pairs, items.shape[1]))
    score_buffer = torch.empty(max((q1 - q0 for q0, q1 in blocks), default=0) * (item_block + max_pairs))
    topk_indices = np.empty((n_queries, k), dtype=np.int64)
    topk_scores = np.empty((n_queries, k), dtype=np.float32)
    ranks = np.empty(len(relevant_items), dtype=np.int64)
    bar = progress_bar(total=n_queries, unit="query", desc="retrieve", disable=not progress)
    with torch.inference_mode(), bar:
        for q0, q1 in blocks:
            p0, p1 = indptr[q0], indptr[q1]
            topk_scores[q0:q1], topk_indices[q0:q1], ranks[p0:p1] = _retrieve_block(
                queries[q0:q1], items, indptr[q0:q1 + 1] - p0, relevant_items[p0:p1], k, item_block,
                item_buffer, score_buffer)
            bar.update(q1 - q0)
    per_query = [np.sort(ranks[indptr[q]:indptr[q + 1]]) for q in range(n_queries)]
    return RetrievalResult(topk_indices, topk_scores, per_query)


def retrieve_both_directions(texts: torch.Tensor, images: torch.Tensor,
                             pairs: np.ndarray | Sequence[tuple[int, int]], k: int = 10,
                             query_block: int = QUERY_BLOCK, item_block: int = ITEM_BLOCK,
                             progress: bool = False) -> dict[str, RetrievalResult]:
    """Text-to-image and image-to-text :func:`rank_queries` from caption and image embeddings; ``pairs``:
    ``(caption_index, image_index)`` where the caption describes the image."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    options = dict(k=k, query_block=query_block, item_block=item_block, progress=progress)
    return {
        "text_to_image": rank_queries(texts, images, pairs, **options),
        "image_to_text": rank_queries(images, texts, pairs[:, ::-1], **options),
    }


def top_k(queries: torch.Tensor | np.ndarray, items: torch.Tensor | np.ndarray, k: int = 10,
          query_block: int = QUERY_BLOCK, item_block: int = ITEM_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The k highest-scoring items of every query, block by block: :func:`rank_queries`' top-k without relevant
    items. Returns ``(scores, indices)``, (Q, min(k, N)) float32 and int64, best first.

    ``items`` may be any float array, a memory-mapped float16 file included: it is read ``item_block`` rows at a
    time and converted to float32 a block at a time (float32 C-contiguous numpy or CPU torch items are used in
    place), so the collection is never copied. Working memory is about ``4 * query_block * item_block`` bytes.

    Raises:
        ValueError: bad shapes, non-finite embeddings, or k/blocks < 1.
    """
    if min(k, query_block, item_block) < 1:
        raise ValueError(f"k, query_block and item_block must be >= 1, got {k}, {query_block}, {item_block}")
    queries = torch.as_tensor(np.asarray(queries) if not isinstance(queries, torch.Tensor) else queries,
                              dtype=torch.float32, device="cpu").contiguous()
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1] or not len(items):
        raise ValueError(f"queries {tuple(queries.shape)} and items {tuple(items.shape)} must be "
                         "(Q, D) and (N, D) with the same D and N >= 1")
    if not np.isfinite(queries.numpy()).all():
        raise ValueError("embeddings must be finite (no NaN or inf)")
    n_queries, n_items = len(queries), len(items)
    k = min(k, n_items)
    scores = np.empty((n_queries, k), dtype=np.float32)
    indices = np.empty((n_queries, k), dtype=np.int64)
    if not n_queries:
        return scores, indices
    # Items of another dtype are converted block by block into one reused buffer (torch's conversion
    # into memory already touched is several times faster than numpy's into a fresh array).
    buffer = None if _is_float32(items) else torch.empty((min(item_block, n_items), items.shape[1]))
    with torch.inference_mode():
        for q0 in range(0, n_queries, query_block):
            block_queries = queries[q0:q0 + query_block]
            best_scores = torch.empty((len(block_queries), 0))
            best_indices = torch.empty((len(block_queries), 0), dtype=torch.int64)
            for i0 in range(0, n_items, item_block):
                block_scores = block_queries @ _float32_block(items, i0, i0 + item_block, buffer).T
                # A non-finite item gives a non-finite score (finite queries): checking the small
                # score block instead of the items keeps one read of the collection per query block.
                if not torch.isfinite(block_scores).all():
                    raise ValueError(f"embeddings must be finite (no NaN or inf): items {i0}..{i0 + item_block}")
                best_scores, best_indices = _merge_topk(
                    best_scores, best_indices, *_block_topk(block_scores, k, i0), k)
            scores[q0:q0 + query_block], indices[q0:q0 + query_block] = best_scores.numpy(), best_indices.numpy()
    return scores, indices


def _is_float32(items: torch.Tensor | np.ndarray) -> bool:
    if isinstance(items, torch.Tensor):
        return items.dtype == torch.float32 and items.device.type == "cpu"
    return items.dtype == np.float32


def _float32_block(items: torch.Tensor | np.ndarray, i0: int, i1: int, buffer: torch.Tensor | None) -> torch.Tensor:
    """Rows ``i0:i1`` of ``items`` as a float32 CPU tensor: a view when float32, else converted into ``buffer``."""
    block = items[i0:i1]
    if not isinstance(block, torch.Tensor):
        with warnings.catch_warnings():  # a read-only memory map: only read here
            warnings.simplefilter("ignore", UserWarning)
            block = torch.as_tensor(block)
    if buffer is None:
        return block.contiguous()
    return buffer[:len(block)].copy_(block)


def _retrieve_block(queries: torch.Tensor, items: torch.Tensor, indptr: np.ndarray, relevant: np.ndarray,
                    k: int, item_block: int, item_buffer: torch.Tensor,
                    score_buffer: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k and relevant ranks for one block of queries against all items, item block by block.

    Matrix products and top-k run in torch; the rank counts run in numpy, whose comparisons
    and boolean row sums are several times faster than torch's on the CPU.
    """
    n_queries = len(queries)
    counts = np.diff(indptr)
    # Pairs ordered by (slot, query): the first relevant item of every query, then the second...
    # so a chunk of n_queries pairs usually covers each query once and needs no row gather.
    slot = np.arange(len(relevant)) - np.repeat(indptr[:-1], counts)
    pair_query = np.repeat(np.arange(n_queries), counts)
    order = np.lexsort((pair_query, slot))
    pair_query, pair_item = pair_query[order], relevant[order]
    unique_items, column = np.unique(pair_item, return_inverse=True)
    extra = items[torch.from_numpy(unique_items)]
    all_rows = np.arange(n_queries)
    ahead = np.zeros(len(relevant), dtype=np.int64)  # items ranked before each relevant item
    best_scores = torch.empty((n_queries, 0))
    best_indices = torch.empty((n_queries, 0), dtype=torch.int64)
    for i0 in range(0, len(items), item_block):
        n_block = min(item_block, len(items) - i0)
        width = n_block + len(extra)
        block_items = item_buffer[:width]
        block_items[:n_block], block_items[n_block:] = items[i0:i0 + n_block], extra
        augmented = torch.mm(queries, block_items.T, out=score_buffer[:n_queries * width].view(n_queries, width))
        best_scores, best_indices = _merge_topk(
            best_scores, best_indices, *_block_topk(augmented[:, :n_block], k, i0), k)
        scores = augmented.numpy()
        own = scores[pair_query, n_block + column]
        block = scores[:, :n_block]
        for c0 in range(0, len(relevant), n_queries):
            chunk = slice(c0, c0 + n_queries)
            rows_q = pair_query[chunk]
            rows = block if np.array_equal(rows_q, all_rows) else block[rows_q]
            own_c, local = own[chunk], pair_item[chunk] - i0
            # Items of a block wholly before the relevant item count when their score is >= its
            # score (equal scores at lower indices rank first), i.e. > the next float down; items
            # of a later block count when strictly greater. One comparison pass per block.
            threshold = np.where(local >= n_block, np.nextafter(own_c, np.float32(-np.inf)), own_c)
            ahead[chunk] += (rows > threshold[:, None]).sum(axis=1)
            # In the block holding the relevant item: ties before it count, itself never does.
            for p in np.flatnonzero((local >= 0) & (local < n_block)):
                row, score, position = rows[p], own_c[p], local[p]
                ahead[c0 + p] += np.count_nonzero(row[:position] == score) - int(row[position] > score)
    ranks = np.empty(len(relevant), dtype=np.int64)
    ranks[order] = 1 + ahead
    return best_scores.numpy(), best_indices.numpy(), ranks


def _block_topk(block: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of a block under the tie rule (order within them is fixed by the merge)."""
    if block.shape[1] <= k:
        scores, indices = torch.sort(block, dim=1, descending=True, stable=True)
        return scores, indices + offset
    scores, indices = torch.topk(block, k + 1, dim=1)
    # A tie across the k-th/(k+1)-th place makes topk's choice arbitrary: redo those rows with a
    # stable sort, which keeps the lower index first among equal scores.
    tied = torch.nonzero(scores[:, k - 1] == scores[:, k], as_tuple=True)[0]
    scores, indices = scores[:, :k], indices[:, :k]
    if len(tied):
        tied_scores, tied_indices = torch.sort(block[tied], dim=1, descending=True, stable=True)
        scores[tied], indices[tied] = tied_scores[:, :k], tied_indices[:, :k]
    return scores, indices + offset


def _merge_topk(scores_a: torch.Tensor, indices_a: torch.Tensor, scores_b: torch.Tensor,
                indices_b: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two candidate lists: higher score first, lower index first among equal scores."""
    indices, by_index = torch.sort(torch.cat([indices_a, indices_b], dim=1), dim=1)
    scores = torch.cat([scores_a, scores_b], dim=1).gather(1, by_index)
    scores, by_score = torch.sort(scores, dim=1, descending=True, stable=True)
    return scores[:, :k], indices.gather(1, by_score)[:, :k]


def _query_blocks(indptr: np.ndarray, query_block: int, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive query ranges of at most ``query_block`` queries and ``max_pairs`` relevant pairs
    (a single query with more pairs gets a block of its own)."""
    blocks, q0, n_queries = [], 0, len(indptr) - 1
    while q0 < n_queries:
        by_pairs = int(np.searchsorted(indptr, indptr[q0] + max_pairs, side="right")) - 1
        q1 = max(q0 + 1, min(q0 + query_block, n_queries, by_pairs))
        blocks.append((q0, q1))
        q0 = q1
    return blocks


def _to_csr(pairs: np.ndarray | Sequence[tuple[int, int]], n_queries: int,
            n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, item) pairs -> (indptr, item indices sorted by query then item), duplicates dropped."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    in_range = (pairs >= 0).all() and (pairs[:, 0] < n_queries).all() and (pairs[:, 1] < n_items).all()
    if not in_range:
        raise ValueError(f"relevant pairs must index {n_queries} queries and {n_items} items")
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    keep = np.ones(len(pairs), dtype=bool)
    keep[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    pairs = pairs[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n_queries))])
    return indptr, pairs[:, 1].copy()


def _check_embeddings(queries: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    queries = torch.as_tensor(queries, dtype=torch.float32, device="cpu")
    items = torch.as_tensor(items, dtype=torch.float32, device="cpu")
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1] or not len(items):
        raise ValueError(f"queries {tuple(queries.shape)} and items {tuple(items.shape)} must be "
                         "(Q, D) and (N, D) with the same D and N >= 1")
    if not (np.isfinite(queries.numpy()).all() and np.isfinite(items.numpy()).all()):
        raise ValueError("embeddings must be finite (no NaN or inf)")
    return queries.contiguous(), items.contiguous()
