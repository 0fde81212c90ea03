"""``clipeval finetune``: fine-tune a checkpoint, then measure what it gained (held-out set) and forgot (second set).

The output folder holds:

* ``checkpoint/``: the fine-tuned model in its base's format, with ``clipeval_checkpoint.json``
  (base spec, base and new weights hashes, data fingerprint, settings): load it with the spec
  :func:`run_finetune` returns (``hf:OUT/checkpoint``, ``open_clip:...``, ``dual:OUT/checkpoint``);
* ``state/state.pt``: the last saved training state (``--resume`` continues from it);
* ``train_pairs.csv``: every training row with its role (caption, hard negative, unused), status and reason;
* ``gain_forgetting.csv``: per set (``role``: ``held-out`` or ``forgetting``), direction and metric,
  the mean before and after, the difference and its paired-bootstrap 95% CI;
* ``before_after_metrics.csv``: both checkpoints' full retrieval metrics (with CIs) on each set;
* ``finetune.json``: the history (loss and validation per epoch), provenance and the sets used;
* ``run.json``: what identifies the run (base checkpoint and its files, the training data and
  the sets with their images' stat fingerprints, the settings): the one claim rule
  (:func:`clipeval.layout.claim`) refuses a folder holding another run unless ``overwrite``, whose
  results are deleted before the new run starts; the same run resumes (``resume``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_csv, write_json
from clipeval.data.fetch import FetchOptions
from clipeval.data.options import SourceOptions
from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables, retrieval_set_from_pairs
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.eval.before_after import compare_before_after
from clipeval.eval.options import RetrievalOptions
from clipeval.file_identity import stat_fingerprint
from clipeval.jobs.manifest import update_manifest
from clipeval.labels.evalset import complete
from clipeval.layout import EvalsetLayout, FinetuneLayout, claim
from clipeval.models.registry import weights_identity
from clipeval.train.finetune import FinetuneResult, finetune, split_pairs
from clipeval.train.options import FinetuneConfig, FinetuneData


def read_evalset_folder(folder: str | Path) -> RetrievalSet:
    """The retrieval set of an eval-set folder written by ``build-evalset``.

    Raises:
        FileNotFoundError: the folder does not hold a complete eval set.
    """
    folder = Path(folder)
    if not complete(folder):
        raise FileNotFoundError(f"{folder} is not a complete eval-set folder (queries.csv, images.csv, "
                                "relevance.csv...); build one with `clipeval build-evalset`")
    evalset = EvalsetLayout(folder)
    return read_retrieval_tables(evalset.queries, evalset.images, evalset.relevance,
                                 name=folder.name)


def _pairs_set(source: str, reading: SourceOptions) -> RetrievalSet:
    table = read_pairs(source, **asdict(reading))
    return retrieval_set_from_pairs(table, Path(source).stem, reading.image_column, reading.caption_column)


def load_finetune_data(data: FinetuneData, reading: SourceOptions = SourceOptions(), seed: int = 0
                       ) -> tuple[pd.DataFrame, RetrievalSet, RetrievalSet | None]:
    """The training pairs, the held-out set and the forgetting set (``None`` when not given).

    Raises:
        ValueError: no training pairs, or more than one held-out set (or forgetting set) given.
    """
    if not data.pairs:
        raise ValueError("give the training pairs (--pairs)")
    if sum(value is not None for value in (data.eval_set, data.eval_pairs, data.holdout)) > 1:
        raise ValueError("give one held-out set: --eval-set, --eval-pairs or --holdout")
    if data.forget_set and data.forget_pairs:
        raise ValueError("give one forgetting set: --forget-set or --forget-pairs")
    pairs = read_pairs(data.pairs, **asdict(reading))
    if data.eval_set:
        held_out = read_evalset_folder(data.eval_set)
    elif data.eval_pairs:
        held_out = _pairs_set(data.eval_pairs, reading)
    else:
        pairs, held = split_pairs(pairs, data.holdout or 0.2, seed, reading.image_column)
        held_out = retrieval_set_from_pairs(held, f"{Path(data.pairs).stem}-held-out", reading.image_column,
                                            reading.caption_column)
    forgetting = read_evalset_folder(data.forget_set) if data.forget_set else \
        _pairs_set(data.forget_pairs, reading) if data.forget_pairs else None
    return pairs, held_out, forgetting


def shared_images(pairs: pd.DataFrame, dataset: RetrievalSet, image_column: str = "image") -> int:
    """How many of ``dataset``'s local images are also training images (same resolved path)."""
    def resolved(refs, base) -> set[str]:
        return {str((Path(base) / ref).resolve() if base and not Path(ref).is_absolute() else Path(ref).resolve())
                for ref in refs.dropna().astype(str) if "://" not in ref}

    return len(resolved(pairs[image_column], pairs.attrs.get("base_dir"))
               & resolved(dataset.images["image"], dataset.base_dir))


@dataclass
class FinetuneRun:
    """What :func:`run_finetune` produced.

    Attributes:
        result: the fine-tuning result (spec, in-memory model, history, provenance).
        differences: ``gain_forgetting.csv``.
        metrics: ``before_after_metrics.csv``.
        out_dir: the output folder.
    """

    result: FinetuneResult
    differences: pd.DataFrame
    metrics: pd.DataFrame
    out_dir: Path


def run_finetune(out_dir: str | Path, base_spec: str, pairs: pd.DataFrame, held_out: RetrievalSet,
                 forgetting: RetrievalSet | None = None, config: FinetuneConfig = FinetuneConfig(),
                 retrieval: RetrievalOptions = RetrievalOptions(), resume: bool = False,
                 validation: RetrievalSet | None = None, overwrite: bool = False,
                 fetch: FetchOptions = FetchOptions()) -> FinetuneRun:
    """Fine-tune, then compare base and fine-tuned checkpoints on the held-out and forgetting sets.

    Args:
        out_dir: the output folder (see the module docstring).
        base_spec: the checkpoint to fine-tune.
        pairs: the training pairs.
        held_out: the held-out set: the gain is measured here.
        forgetting: a set the fine-tuning never saw: what was lost is measured here.
        config: the fine-tuning settings.
        retrieval: cut-offs and bootstrap of the before/after comparison.
        resume: continue from the output folder's saved state (of this same run).
        validation: the set scored after each epoch (default: ``held_out``).
        overwrite: discard an earlier run of other settings or data in ``out_dir`` instead of refusing.
        fetch: how images are read, for training and both comparisons (``image_root``, ``allow_any_path``...).

    Returns:
        A :class:`FinetuneRun`.

    Raises:
        RunFolderMismatch: ``out_dir`` holds another run's results and not ``overwrite`` (the message names what
            differs).
    """
    out_dir, layout = Path(out_dir), FinetuneLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = [getattr(layout, name) for name in FinetuneLayout.RESULTS]
    state = claim(layout.fingerprint, finetune_fingerprint(base_spec, pairs, held_out, forgetting, config, retrieval,
                                                           validation), overwrite,
                  holds_results=any(path.exists() for path in results))
    if not (state == "same" and resume):  # a run that does not resume this one: nothing of the earlier one stays
        for path in results:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    result = finetune(base_spec, pairs, out_dir, config, validation if validation is not None else held_out, resume,
                      fetch)
    write_csv(layout.train_pairs, result.rows)
    embed = EmbedOptions(batch_size=config.eval_batch_size, device=config.device, precision=config.precision,
                         progress=config.progress, fetch=fetch)
    compared = [compare_before_after(held_out, base_spec, result.spec, "held-out", retrieval, embed)]
    if forgetting is not None:
        compared.append(compare_before_after(forgetting, base_spec, result.spec, "forgetting", retrieval, embed))
    differences = pd.concat([item.differences for item in compared], ignore_index=True)
    metrics = pd.concat([item.metrics for item in compared], ignore_index=True)
    write_csv(layout.gain_forgetting, differences)
    write_csv(layout.before_after_metrics, metrics)
    sets = {"held-out": _describe(held_out, pairs)}
    if forgetting is not None:
        sets["forgetting"] = _describe(forgetting, pairs)
    write_json(layout.summary, {"checkpoint": result.spec, "provenance": result.provenance,
                                "history": result.history, "sets": sets, "retrieval": asdict(retrieval)})
    update_manifest(layout.manifest, "finetune", {"config": asdict(config), "retrieval": asdict(retrieval),
                                                  "resume": resume, "sets": sets}, [base_spec, result.spec], [],
                    seed=config.seed)
    return FinetuneRun(result, differences, metrics, out_dir)


def finetune_fingerprint(base_spec: str, pairs: pd.DataFrame, held_out: RetrievalSet, forgetting: RetrievalSet | None,
                    config: FinetuneConfig, retrieval: RetrievalOptions,
                    validation: RetrievalSet | None = None) -> dict:
    """What identifies a fine-tuning run, for :func:`clipeval.layout.claim`: one flat, readable dict.

    The base checkpoint (its spec and its files' stat fingerprints), the training pairs and each set (their
    tables and their local images' stat fingerprints, as short digests), the settings that change the results
    (not the device, bars, evaluation batch size or save interval) and the before/after comparison's options.
    """
    ignored = ("device", "progress", "eval_batch_size", "save_every")
    settings = {key: value for key, value in asdict(config).items() if key not in ignored}
    sets = {"held_out": held_out, "forgetting": forgetting, "validation": validation}
    described = {}
    for role, dataset in sets.items():
        described[role] = None if dataset is None else dataset.name
        described[f"{role}_data"] = None if dataset is None else _set_digest(dataset)
    fingerprint = {"checkpoint": base_spec, "checkpoint_files": _digest(weights_identity(base_spec)),
                   "train_rows": len(pairs), "train_data": _table_digest(pairs, pairs.attrs.get("base_dir")),
                   **described, **settings, **{f"retrieval_{key}": value for key, value in asdict(retrieval).items()}}
    return json.loads(json.dumps(fingerprint, default=str))  # as run.json holds it: tuples are lists


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _table_digest(table: pd.DataFrame, base_dir, image_column: str = "image") -> str:
    """A table's cells and its local images' stat fingerprints (a file replaced under the same name changes it)."""
    files = []
    for ref in pd.unique(table[image_column].dropna().astype(str)) if image_column in table else []:
        if "://" in ref:
            continue
        path = Path(base_dir) / ref if base_dir and not Path(ref).is_absolute() else Path(ref)
        try:
            files.append([ref, stat_fingerprint(path)])
        except OSError:
            files.append([ref, None])
    return _digest([table.to_csv(index=False), files])


def _set_digest(dataset: RetrievalSet) -> str:
    return _digest([_table_digest(dataset.images, dataset.base_dir), dataset.queries.to_csv(index=False),
                    dataset.relevant.tolist()])


def _describe(dataset: RetrievalSet, pairs: pd.DataFrame) -> dict:
    return {"name": dataset.name, "queries": len(dataset.queries), "images": len(dataset.images),
            "relevant_pairs": len(dataset.relevant), "images_also_in_training": shared_images(pairs, dataset)}


def format_differences(differences: pd.DataFrame) -> str:
    """The gain/forgetting table as printed: one line per set, direction and metric, with the metric's chance
    level and a note on a trivial one (``k`` at least every candidate: 1.0 whatever the model), as ``retrieve``
    prints its metrics."""
    columns = ["role", "dataset", "direction", "metric", "before", "after", "difference", "ci_low", "ci_high",
               "chance", "note"]
    notes = [f"trivial: k >= all {n}" if trivial else "" for n, trivial in
             zip(differences["n_candidates"], differences["trivial"])]
    return differences.assign(note=notes)[columns].round(4).to_string(index=False)
