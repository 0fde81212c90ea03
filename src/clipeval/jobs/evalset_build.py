"""The pseudo-labelling step: build an eval set from a folder of images (``python -m clipeval build-evalset``).

:func:`build_evalset` labels every image of a folder, writes the eval-set files
(:mod:`clipeval.labels.evalset`) and reuses them when the same images and settings were labelled
before. Notebook 07's study of the labels' quality is :mod:`clipeval.studies.labels`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables
from clipeval.data.sources import IMAGE_EXTENSIONS, image_files
from clipeval.jobs.manifest import update_manifest
from clipeval.labels.evalset import complete, write_evalset
from clipeval.labels.registry import LabelOptions, build_labeller
from clipeval.layout import EvalsetLayout, claim
from clipeval.warn import RunWarning, warn


def list_images(folder: str | Path) -> list[str]:
    """Every image file under ``folder`` (:func:`clipeval.data.sources.image_files`), as relative paths."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder {root}")
    return [path.relative_to(root).as_posix() for path in image_files(root)]


@dataclass
class BuiltEvalset:
    """An eval-set folder and what it holds.

    Attributes:
        folder: where the files are.
        dataset: the set as the retrieval evaluation reads it.
        labels: every kept label (``labels.csv``).
        reused: whether an earlier build with the same images and settings was reused.
    """

    folder: Path
    dataset: RetrievalSet
    labels: pd.DataFrame
    reused: bool


def _fingerprint(images_dir: Path, refs: list[str], settings: dict) -> dict:
    files = [[ref, (images_dir / ref).stat().st_size, (images_dir / ref).stat().st_mtime_ns] for ref in refs]
    return {"settings": settings, "images": files}


def build_evalset(out_dir: str | Path, images_dir: str | Path, labelling: LabelOptions = LabelOptions(),
                  device: str = "auto", rebuild: bool = False, progress: bool = True) -> BuiltEvalset:
    """Label every image under ``images_dir`` and write an eval set to ``out_dir``; reuse an identical earlier build.

    A folder holding a build of other images or settings is refused unless ``rebuild``, which also
    relabels an identical one (:func:`clipeval.layout.claim`, the rule scoring runs follow too).
    The labeller's warnings (a zero-shot vocabulary its tokenizer does not know) are printed, built or
    reused, and kept in ``evalset.json`` and the manifest.

    Raises:
        FileNotFoundError: ``images_dir`` is not a folder.
        ValueError: no image file in it, a bad labeller setting, or no label at the threshold (the
            files are written all the same, ``labels.csv`` empty, for a look at what was labelled).
        RunFolderMismatch: ``out_dir`` holds another build and not ``rebuild``.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    refs = list_images(images_dir)
    if not refs:
        raise ValueError(f"no image file under {images_dir} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    settings = {"labeller": labelling.labeller, "model": labelling.model, "threshold": labelling.threshold,
                "top_k": labelling.top_k, "vocabulary": list(labelling.vocabulary)}
    layout = EvalsetLayout(out_dir)
    state = claim(layout.fingerprint, _fingerprint(images_dir, refs, settings), overwrite=rebuild,
                  holds_results=complete(out_dir), overwrite_flag="--rebuild")
    reused = state == "same" and complete(out_dir) and not rebuild
    if not reused:
        run = build_labeller(labelling, device, progress).label(refs, images_dir)
        write_evalset(run, out_dir, images_dir)
        update_manifest(layout.manifest, "build-evalset", {**settings, "images_dir": str(images_dir)},
                        [], [], warnings=run.stats.get("warnings"))
    stats = json.loads(layout.summary.read_text())["stats"]
    warn(RunWarning(**record) for record in stats.get("warnings", []))  # a reused build says them again
    labels = pd.read_csv(layout.labels, keep_default_na=False, na_values=[""])
    if labels.empty:
        raise ValueError(f"no image of {images_dir} got a label at threshold {labelling.threshold} from the "
                         f"{labelling.labeller} labeller "
                         f"({len(refs)} images; {layout.images} says why for each): the eval set has no "
                         "query; lower --threshold, or use another labeller or model")
    dataset = read_retrieval_tables(layout.queries, layout.images, layout.relevance, name=out_dir.name)
    return BuiltEvalset(out_dir, dataset, labels, reused)
