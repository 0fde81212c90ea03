"""Build the rehearsal hub mirror: every repository the paper profile needs, random, under its real name.

``<out>/hf`` is a ``HF_HOME`` (its ``hub/`` in huggingface_hub's layout, :mod:`.hub_cache`) and
``<out>/torch`` a ``TORCH_HOME``; :func:`clipeval.models.hub_mirror.mirror_env` points the
libraries at them, offline. ``<out>/hf/clipeval_mirror.json`` lists what the mirror holds, says
that its weights are random, and is what the catalogue and the report read to mark outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from clipeval.atomic import write_text
from clipeval.data.benchmarks import POKEMON_REPO
from clipeval.data.sugarcrepe import SUGARCREPE_CATEGORIES
from clipeval.models.baseline import resnet_weights_file
from clipeval.models.hub_mirror import MIRROR_FILE, MIRROR_NOTE
from clipeval.models.registry import quiet_progress_bars
from clipeval.models.stand_ins import resnet50_weights_file
from clipeval.progress import progress_bar
from clipeval.rehearsal import dataset_repos, model_repos
from clipeval.rehearsal.hub_cache import add_repo

COCO_WDS = "clip-benchmark/wds_mscoco_captions"
FLICKR_WDS = "clip-benchmark/wds_flickr30k"
IMAGENET_REPO = "ILSVRC/imagenet-1k"
CIFAR10_REPO = "uoft-cs/cifar10"
CIFAR100_REPO = "uoft-cs/cifar100"
SUGARCREPE = "sugarcrepe"


def dataset_builders(rows: int | None = None) -> dict[str, Callable[[Path], None]]:
    """Every dataset repository: hub ``org/name`` -> builder; ``rows`` shrinks each to that many images (tests)."""
    return {COCO_WDS: partial(dataset_repos.wds_retrieval, n_images=rows or 5000),
            FLICKR_WDS: partial(dataset_repos.wds_retrieval, n_images=rows or 1000, seed=1),
            POKEMON_REPO: partial(dataset_repos.pokemon_captions, n_rows=rows or 833),
            IMAGENET_REPO: partial(dataset_repos.imagenet_classes, rows=rows or 1000),
            CIFAR10_REPO: partial(dataset_repos.cifar_classes, classes=10, rows=rows or 1000),
            CIFAR100_REPO: partial(dataset_repos.cifar_classes, classes=100, rows=rows or 1000)}


def folder_builders(rows: int | None = None) -> dict[str, Callable[[Path], None]]:
    """Every plain folder (what the paper profile reads from a clone or a download, not from the hub): name ->
    builder writing into the mirror's root; ``rows`` shrinks each (tests)."""
    return {SUGARCREPE: partial(dataset_repos.sugarcrepe_folders,
                                items_per_category=max(1, rows // len(SUGARCREPE_CATEGORIES)) if rows else 50)}


def torch_builders() -> dict[str, Callable[[Path], None]]:
    """Every torchvision weight file: its file name -> builder of that file."""
    return {resnet_weights_file(): resnet50_weights_file}


@contextlib.contextmanager
def _quiet_libraries():
    """The libraries' own bars and notes, once per repository, say nothing here: transformers' "Writing
    model shards", datasets' "Creating parquet", open_clip's "No pretrained weights loaded" (the point)."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with quiet_progress_bars():
            yield
    finally:
        logging.disable(previous)
        if bars_were_on:
            datasets.enable_progress_bars()


def mirror_contents() -> dict[str, list[str]]:
    """What a full mirror holds: ``models``, ``datasets`` (hub repositories), ``torch_files`` and ``folders``."""
    return {"models": sorted(model_repos.model_builders()), "datasets": sorted(dataset_builders()),
            "torch_files": sorted(torch_builders()), "folders": sorted(folder_builders())}


def build_mirror(out: str | Path, only: list[str] | None = None, dataset_rows: int | None = None,
                 progress: bool = True) -> Path:
    """Write the mirror into ``out`` (``hf/``, ``torch/`` and the plain folders), added to what a mirror there
    already holds; ``only`` builds just those repositories, torch files or folders, ``dataset_rows`` shrinks each
    dataset and folder (tests).

    Raises:
        ValueError: ``only`` names something the mirror does not hold.
    """
    out = Path(out)
    models, datasets, torch_files = model_repos.model_builders(), dataset_builders(dataset_rows), torch_builders()
    folders = folder_builders(dataset_rows)
    everything = {**models, **datasets, **torch_files, **folders}
    wanted = list(everything) if only is None else list(only)
    unknown = sorted(set(wanted) - set(everything))
    if unknown:
        raise ValueError(f"the mirror holds no {', '.join(unknown)}; it holds {', '.join(sorted(everything))}")
    hub = out / "hf" / "hub"
    marker = out / "hf" / MIRROR_FILE
    held = {kind: [] for kind in ("models", "datasets", "torch_files", "folders")}
    held |= json.loads(marker.read_text()) if marker.is_file() else {}
    for name in progress_bar(wanted, desc="rehearsal hub mirror", unit="repo", disable=not progress):
        if name in torch_files:
            torch_files[name](out / "torch" / "hub" / "checkpoints" / name)
            kind = "torch_files"
        elif name in folders:
            folders[name](out)
            kind = "folders"
        else:
            with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as staging, \
                    _quiet_libraries():
                everything[name](Path(staging))
                add_repo(hub, name, staging, "dataset" if name in datasets else "model")
            kind = "datasets" if name in datasets else "models"
        held[kind] = sorted(set(held[kind]) | {name})
    write_text(marker, json.dumps({**held, "note": MIRROR_NOTE, "dataset_rows": dataset_rows,
                                   "built_utc": datetime.now(UTC).isoformat(timespec="seconds")}, indent=2) + "\n")
    return out

