"""Eval-set files from pseudo-labels, in the three-table format the retrieval evaluation reads (docs/eval-sets.md
gives the folder's files and their columns).

Images with no label stay in the collection: they are what a real search would also have to rank.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv, write_json
from clipeval.labels.base import LabelRun
from clipeval.layout import EvalsetLayout

SHARED_TEXT_LABELLERS = ("classifier", "zero-shot")


def _portable(ref: str, base_dir: Path | None, out_dir: Path) -> str:
    """An image reference as the eval set stores it: relative to ``out_dir`` when it is a local file."""
    path = Path(ref) if base_dir is None or Path(ref).is_absolute() else Path(base_dir) / ref
    if "://" in ref or not path.exists():
        return ref
    return os.path.relpath(path.resolve(), out_dir.resolve())


def evalset_tables(run: LabelRun, distinct_texts: bool | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The queries, images and relevance tables of a labelling run (paths as given).

    ``distinct_texts``: one query per distinct text, or per label; default by labeller (classifier and
    zero-shot labels share texts, captions do not: the COCO protocol).
    """
    labels = run.labels.reset_index(drop=True)
    labeller = labels["labeller"].iloc[0] if len(labels) else ""
    if distinct_texts is None:
        distinct_texts = labeller in SHARED_TEXT_LABELLERS
    images = run.images.assign(image_id=[f"i{i:06d}" for i in range(len(run.images))])
    image_id = dict(zip(images["image"], images["image_id"]))
    group = labels["text"] if distinct_texts else pd.Series(range(len(labels)), index=labels.index)
    codes, _ = pd.factorize(group)
    labels = labels.assign(query_id=[f"q{code:06d}" for code in codes], image_id=labels["image"].map(image_id))
    queries = (labels.groupby("query_id", sort=False)
               .agg(caption=("text", "first"), labeller=("labeller", "first"), model=("model", "first"),
                    threshold=("threshold", "first"), confidence=("confidence", "mean"),
                    n_relevant=("image_id", "nunique"))
               .reset_index())
    relevance = labels[["query_id", "image_id", "confidence"]].drop_duplicates(["query_id", "image_id"])
    return queries, images[["image_id", "image", "status", "error", "n_labels"]], relevance


def write_evalset(run: LabelRun, out_dir: str | Path, base_dir: str | Path | None = None,
                  distinct_texts: bool | None = None) -> Path:
    """Write the eval-set folder, every file atomically; ``base_dir``: the folder the run's relative image
    references are relative to. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    queries, images, relevance = evalset_tables(run, distinct_texts)
    images = images.assign(image=[_portable(ref, Path(base_dir) if base_dir else None, out_dir)
                                  for ref in images["image"]])
    layout = EvalsetLayout(out_dir)
    write_csv(layout.queries, queries)
    write_csv(layout.images, images)
    write_csv(layout.relevance, relevance)
    write_csv(layout.labels, run.labels)
    # the images' folder: a reader of images.csv confines its paths to it (--image-root) as well as to out_dir
    root = {"image_root": str(Path(base_dir).resolve())} if base_dir else {}
    write_json(layout.summary, {"stats": run.stats, "queries": len(queries), "relevant_pairs": len(relevance), **root})
    return out_dir


def complete(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds every file of an eval set."""
    return EvalsetLayout(out_dir).is_complete
