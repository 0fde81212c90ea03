"""Does storing an index's vectors as float16 change any ranking? Measured on a real embedded collection.

    python bench/bench_finder_float16.py [--checkpoint dual:outputs/offline/models/dual
                                          --scenes data/generated/scenes --out bench/results/finder_float16.json]

The collection: every scenes image (train, val and test: the images ``make data`` generates),
embedded by the trained dual encoder (``make reproduce`` trains it) through the one embedding path,
float32 L2-normalised. Queries: the scenes' val and test query captions (text -> image) and every
image (image -> image, itself left out). Each query is ranked against the float32 vectors and
against the same vectors rounded to float16 (what ``vectors/<name>.npy`` stores); reported per
direction: how often the top 1 and the top-10 set agree, the mean top-10 overlap, the largest
score change, the largest float32 score gap between two items whose order float16 swaps (when
any), and text -> image Recall@10 on the test queries (relevance_test.csv) both ways.

A second part repeats the comparison on synthetic clustered unit vectors of CLIP ViT-B's dimension
(512) at 100,000 vectors, where near-ties are denser than in 6,000 real ones (as ``bench_finder``
builds them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_pipeline import machine_info, save_report
from clipeval.data.images import read_many_bytes
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.paths import PROJECT_ROOT

K = 10
BLOCK = 1024


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's top k by score (ties by lower index), best first."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def compare(queries: np.ndarray, items: np.ndarray, exclude_self: bool = False) -> dict:
    """float32 vs float16-stored items: top-1 and top-10 agreement, score changes, swapped pairs' gaps."""
    stored = items.astype(np.float16).astype(np.float32)
    top1 = same_set = same_order = 0
    overlaps, max_change, swap_gaps = [], 0.0, []
    for start in range(0, len(queries), BLOCK):
        block = queries[start:start + BLOCK]
        exact, rounded = block @ items.T, block @ stored.T
        max_change = max(max_change, float(np.abs(exact - rounded).max()))
        if exclude_self:
            rows = np.arange(len(block))
            exact[rows, start + rows] = rounded[rows, start + rows] = -np.inf
        first, second = _top(exact, K), _top(rounded, K)
        for row, (a, b) in enumerate(zip(first, second)):
            top1 += a[0] == b[0]
            same_order += bool((a == b).all())
            shared = len(set(a) & set(b))
            overlaps.append(shared / K)
            same_set += shared == K
            if not (a == b).all():  # the widest float32 gap between two items float16 puts in the other order
                union = np.union1d(a, b)
                truth, stored_scores = exact[row, union], rounded[row, union]
                discordant = np.sign(truth[:, None] - truth[None, :]) * np.sign(
                    stored_scores[:, None] - stored_scores[None, :]) < 0
                gaps = np.abs(truth[:, None] - truth[None, :])[discordant]
                swap_gaps.append(float(gaps.max()) if gaps.size else 0.0)
    n = len(queries)
    return {"queries": n, "items": len(items), "top1_agree": top1 / n, "top10_same_set": same_set / n,
            "top10_same_order": same_order / n, "mean_top10_overlap": float(np.mean(overlaps)),
            "max_score_change": max_change, "queries_with_a_change": len(swap_gaps),
            "largest_gap_at_a_change": max(swap_gaps) if swap_gaps else None}


def recall_at_10(queries: np.ndarray, items: np.ndarray, relevant: list[set[int]]) -> float:
    top = _top(queries @ items.T, K)
    return float(np.mean([len(set(row) & wanted) / len(wanted) for row, wanted in zip(top, relevant) if wanted]))


def scenes_part(checkpoint: str, scenes: Path) -> dict:
    pairs = pd.concat([pd.read_csv(scenes / f"pairs_{split}.csv") for split in ("train", "val", "test")])
    images = list(dict.fromkeys(pairs["image"]))
    queries = pd.concat([pd.read_csv(scenes / f"queries_{split}.csv").assign(split=split) for split in ("val", "test")])
    options = EmbedOptions(device="cpu", progress=False, embedding_cache=False)
    started = time.perf_counter()
    with Embedder(LazyEncoder(checkpoint, options), options) as embedder:
        embedded = embedder.images(read_many_bytes(images, scenes))
        texts = embedder.texts(queries["caption"].tolist()).of(np.arange(len(queries))).numpy()
    assert not embedded.errors, embedded.errors
    vectors = embedded.of(np.arange(len(images))).numpy()
    test = queries["split"].to_numpy() == "test"
    position = {Path(image).stem: i for i, image in enumerate(images)}
    relevance = pd.read_csv(scenes / "relevance_test.csv")
    wanted = relevance.groupby("query_id")["image_id"].apply(lambda ids: {position[i] for i in ids})
    relevant = [wanted.get(query_id, set()) for query_id in queries.loc[test, "query_id"]]
    stored = vectors.astype(np.float16).astype(np.float32)
    return {"checkpoint": checkpoint, "images": len(images), "dim": int(vectors.shape[1]),
            "embed_s": time.perf_counter() - started,
            "text_to_image": compare(texts, vectors),
            "image_to_image": compare(vectors, vectors, exclude_self=True),
            "recall_at_10_test": {"float32": recall_at_10(texts[test], vectors, relevant),
                                  "float16": recall_at_10(texts[test], stored, relevant)}}


def synthetic_part(n: int, dim: int, queries: int) -> dict:
    from bench_finder import clustered_embeddings, queries_near

    vectors, centres, sizes = clustered_embeddings(n, dim, seed=0)
    asked, _ = queries_near(vectors, centres, sizes, queries, seed=1)
    return {"n": n, "dim": dim, "text_like_queries": compare(asked, vectors)}


def table(report: dict) -> str:
    rows = []
    for name, part in (("scenes text->image", report["scenes"]["text_to_image"]),
                       ("scenes image->image", report["scenes"]["image_to_image"]),
                       ("synthetic 100k", report["synthetic"]["text_like_queries"])):
        rows.append({"comparison": name, "queries": part["queries"], "items": part["items"],
                     "top1 agree": part["top1_agree"], "top10 same set": part["top10_same_set"],
                     "mean top10 overlap": part["mean_top10_overlap"], "max score change": part["max_score_change"]})
    recall = report["scenes"]["recall_at_10_test"]
    return (pd.DataFrame(rows).to_string(index=False) +
            f"\nRecall@10 (scenes test, text->image): float32 {recall['float32']:.4f}, float16 {recall['float16']:.4f}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="dual:outputs/offline/models/dual")  # relative: run from the root
    parser.add_argument("--scenes", type=Path, default=PROJECT_ROOT / "data/generated/scenes")
    parser.add_argument("--synthetic-n", type=int, default=100_000)
    parser.add_argument("--synthetic-queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench/results/finder_float16.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = {"machine": machine_info(), "k": K, "scenes": scenes_part(args.checkpoint, args.scenes),
              "synthetic": synthetic_part(args.synthetic_n, 512, args.synthetic_queries)}
    return save_report(report, args.out, started, table)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
