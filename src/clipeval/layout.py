"""Every file a job's folder may hold, named once, and the one claim rule for a folder holding an earlier run.

docs/report.md ("What a run folder holds") lists the run folder's files and the step writing each; the
other folders are described on their job's page (curation, eval-sets, fine-tuning, finder).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clipeval.atomic import write_json

# The columns scoring adds to the input rows in results.csv, and the columns of scores.csv.
RESULT_COLUMNS = ("similarity", "clip_score_100", "caption_truncated", "image_width", "image_height", "status", "error")
SCORE_COLUMNS = ("row_id", "checkpoint", "cosine", "clip_score_100", "clip_score_2_5", "caption_truncated",
                 "image_width", "image_height", "status", "error")
# a scored shard's columns: these per row, then these per checkpoint as NAME[SPEC]
ROW_COLUMNS = ("uid", "row", "image_width", "image_height", "status", "error")
PER_CHECKPOINT = ("cosine", "clip_score_100", "caption_truncated", "status", "error", "model_key", "preprocess")


def score_column(name: str, spec: str) -> str:
    """A per-checkpoint column of the scored shards and the curation tables: ``cosine[SPEC]``, ``status[SPEC]``..."""
    return f"{name}[{spec}]"


class _File:
    """A file (or folder) of a folder layout, named once: ``manifest = _File("manifest.json")``."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, layout, owner=None) -> Path:
        return layout.root.joinpath(*self.parts) if layout is not None else self


class RunFolderMismatch(ValueError):
    """The folder holds an earlier run (or build) with other inputs, checkpoints or settings."""


class RunIncomplete(ValueError):
    """The folder holds a scoring run that did not finish (``incomplete.json``): its tables are not its results."""


@dataclass(frozen=True)
class ShardFiles:
    """One input shard's outputs in a run folder: its scores, its done- and failed-markers, its chunk parts."""

    scores: Path
    done: Path
    failed: Path
    parts: Path


@dataclass(frozen=True)
class _Folder:
    """A folder whose files are named once: its ``root`` and its ``manifest.json``."""

    root: Path

    manifest = _File("manifest.json")

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))


@dataclass(frozen=True)
class RunLayout(_Folder):
    """The files of a run folder (docs/report.md)."""

    fingerprint = _File("run.json")
    shards = _File("shards")
    shard_table = _File("shards.csv")
    sharded_stats = _File("sharded_stats.json")
    results = _File("results.csv")
    scores = _File("scores.csv")
    stats = _File("stats.json")
    stats_log = _File("stats.log")
    score_summary = _File("score_summary.csv")
    metrics = _File("metrics.csv")
    retrieval_ranks = _File("retrieval_ranks.csv")
    retrieval_worst = _File("retrieval_worst.csv")
    retrieval_stats = _File("retrieval_stats.json")
    retrieval_stats_log = _File("retrieval_stats.log")
    benchmark_metrics = _File("benchmark_metrics.csv")
    published_comparison = _File("published_comparison.csv")
    dual_encoder_eval = _File("dual_encoder_eval.json")
    label_quality = _File("label_quality.csv")
    label_threshold_sweep = _File("label_threshold_sweep.csv")
    label_metric_bias = _File("label_metric_bias.csv")
    curation_rules = _File("curation_rules.csv")
    curation_precision_recall = _File("curation_precision_recall.csv")
    sharded_study = _File("sharded")
    finetune_hard_negatives = _File("finetune_hard_negatives.csv")
    finetune_retrieval = _File("finetune_retrieval.csv")
    finetune_history = _File("finetune_history.csv")
    finetune_costs = _File("finetune_costs.csv")
    finder = _File("finder")
    zero_shot_metrics = _File("zero_shot_metrics.csv")
    zero_shot_per_class = _File("zero_shot_per_class.csv")
    zero_shot_confusion = _File("zero_shot_confusion.csv")
    zero_shot_predictions = _File("zero_shot_predictions.parquet")
    zero_shot_stats = _File("zero_shot_stats.json")
    hard_negative_accuracy = _File("hard_negative_accuracy.csv")
    hard_negative_outcomes = _File("hard_negative_outcomes.csv")
    sharded_executors = _File("sharded", "executors.csv")
    figures = _File("figures")
    notebooks = _File("notebooks")
    report = _File("report")
    incomplete = _File("incomplete.json")

    # the tables a scoring run writes from its scored shards: deleted when the run is replaced
    SCORING_TABLES = ("shard_table", "sharded_stats", "results", "scores", "stats", "stats_log")

    @property
    def is_complete(self) -> bool:
        """False while ``incomplete.json`` is there: a scoring run started here and has not finished."""
        return not self.incomplete.exists()

    @property
    def incomplete_reason(self) -> str | None:
        """Why the run is incomplete (one line, for a banner or an error), or ``None`` when it is complete."""
        if self.is_complete:
            return None
        try:
            marker = json.loads(self.incomplete.read_text())
        except (OSError, json.JSONDecodeError):
            marker = {}
        return (f"{self.root} holds an unfinished scoring run (started {marker.get('started_utc', '?')}): "
                f"{marker.get('reason', 'it did not finish')}; its tables are not its results until it is rerun "
                "to the end")

    def require_complete(self) -> None:
        """Raise :class:`RunIncomplete` (its message says why) when the folder holds an unfinished run."""
        reason = self.incomplete_reason
        if reason is not None:
            raise RunIncomplete(reason)

    def mark_incomplete(self, reason: str) -> None:
        """Write ``incomplete.json``: until :meth:`mark_complete`, the folder's tables are not its results."""
        write_json(self.incomplete, {"reason": reason, "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                                     "pid": os.getpid()})

    def mark_complete(self) -> None:
        """Remove ``incomplete.json``: the run finished."""
        self.incomplete.unlink(missing_ok=True)

    def shard(self, name: str) -> ShardFiles:
        """An input shard's files under ``shards/``."""
        folder = self.shards
        return ShardFiles(folder / f"{name}.parquet", folder / f"{name}.done.json", folder / f"{name}.failed.json",
                          folder / f"{name}.parts")

    def shard_attempt(self, name: str, attempt: str) -> ShardFiles:
        """One attempt's files of an input shard, under ``shards/<name>.attempts/<attempt>/`` until it commits
        them to :meth:`shard`'s (the Ray executor: copies of a shard never write the same file); the chunk
        parts are the shard's, so an attempt resumes what an earlier one finished."""
        folder = self.shard_attempts(name) / attempt
        return ShardFiles(folder / f"{name}.parquet", folder / f"{name}.done.json", folder / f"{name}.failed.json",
                          self.shard(name).parts)

    def shard_attempts(self, name: str) -> Path:
        """The folder of a shard's attempts and of ``commit.lock``, held by the attempt committing its files."""
        return self.shards / f"{name}.attempts"

    def benchmark(self, name: str) -> RunLayout:
        """A standard benchmark's retrieval folder (its own metrics, ranks and stats)."""
        return RunLayout(self.root / "benchmarks" / name)

    def finder_index(self, name: str) -> Path:
        """An image-finder index folder of the run (:class:`IndexLayout`), notebook 10's."""
        return self.finder / name

    def evalset(self, name: str) -> Path:
        """A pseudo-labelled eval set's folder."""
        return self.root / "evalsets" / name

    @property
    def challenge_run(self) -> RunLayout:
        """The curation study's scored challenge set, a run folder of its own."""
        return RunLayout(self.root / "curation" / "challenge")

    @property
    def holds_scores(self) -> bool:
        """Whether a shard was scored here, whole (a done-marker) or in part (a finished chunk), or a run is
        still going here (the process that wrote ``incomplete.json`` is alive). A run that scored nothing (it
        stopped at a mistyped checkpoint or a missing file) left nothing to lose."""
        if any(self.shards.glob("*.done.json")) or any(self.shards.glob("*.parts/*.parquet")):
            return True
        try:
            pid = int(json.loads(self.incomplete.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)  # signal 0: nothing sent, only whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True

    def scored_shards(self) -> list[Path]:
        """The done shards' score files, in input order when ``shards.csv`` gives it."""
        if self.shard_table.exists():
            import pandas as pd  # here, not at the top: the command line imports this module and answers --help at once

            names = pd.read_csv(self.shard_table, dtype=str)["name"]
            return [self.shard(name).scores for name in names if self.shard(name).done.exists()]
        return sorted(self.shard(path.name.removesuffix(".done.json")).scores
                      for path in self.shards.glob("*.done.json"))


@dataclass(frozen=True)
class CurationLayout(_Folder):
    """The files of a curation folder (docs/curation.md)."""

    summary = _File("summary.csv")
    kept_uids = _File("kept_uids.parquet")
    kept = _File("kept.csv")
    dropped = _File("dropped.csv")
    curated = _File("curated.csv")

    def decisions(self, shard: str) -> Path:
        """Every row of one input shard: kept, or the step and reason that dropped it."""
        return self.root / "decisions" / f"{shard}.parquet"

    def filtered(self, name: str) -> Path:
        """An input shard filtered to its kept samples (``--write-filtered``)."""
        return self.root / "filtered" / name


def checkpoint_slug(spec: str) -> str:
    """A checkpoint spec as a safe file name, unique per spec: its readable tail and 8 hex digits of its SHA-256.

    Only ASCII letters, digits, ``-``, ``_`` and ``.``, never a leading dot, at most 57 characters.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-.")[-48:].lstrip("-.") or "checkpoint"
    return f"{readable}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class IndexLayout(_Folder):
    """The files of an image-finder index folder (``clipeval index``; docs/finder.md, "Index layout").

    ``<name>`` is :func:`checkpoint_slug` of the spec. Version 1 held one item per input row.
    """

    KIND = "clipeval-index"
    VERSION = 2

    fingerprint = _File("run.json")
    items = _File("items.parquet")
    failed = _File("failed.csv")
    vectors_dir = _File("vectors")
    ann_dir = _File("ann")
    thumbnails = _File("thumbnails")
    queries = _File("queries.jsonl")

    def vectors(self, spec: str) -> Path:
        """A checkpoint's vectors (float16, one row per ok item)."""
        return self.vectors_dir / f"{checkpoint_slug(spec)}.npy"

    def vector_ids(self, spec: str) -> Path:
        """A checkpoint's vector rows' positions in ``items.parquet``."""
        return self.vectors_dir / f"{checkpoint_slug(spec)}.ids.npy"

    def ann(self, spec: str) -> Path:
        """A checkpoint's approximate index (present only when the ANN rule chose one)."""
        return self.ann_dir / f"{checkpoint_slug(spec)}.faiss"

    def ann_params(self, spec: str) -> Path:
        """The approximate index's type and parameters."""
        return self.ann_dir / f"{checkpoint_slug(spec)}.json"

    def thumbnail(self, item_id: str) -> Path:
        """An item's thumbnail (ids are safe names: no ``/``, never ``.`` or ``..``)."""
        return self.thumbnails / f"{item_id}.jpg"


@dataclass(frozen=True)
class EvalsetLayout(_Folder):
    """The files of a pseudo-labelled eval-set folder (``clipeval build-evalset --out``; docs/eval-sets.md)."""

    fingerprint = _File("run.json")
    queries = _File("queries.csv")
    images = _File("images.csv")
    relevance = _File("relevance.csv")
    labels = _File("labels.csv")
    summary = _File("evalset.json")

    # the files every complete eval set holds
    TABLES = ("queries", "images", "relevance", "labels", "summary")

    @property
    def is_complete(self) -> bool:
        """Whether every file of an eval set is there."""
        return all(getattr(self, name).is_file() for name in self.TABLES)


@dataclass(frozen=True)
class FinetuneLayout(_Folder):
    """The files of a fine-tuning folder (``clipeval finetune --out``; docs/fine-tuning.md)."""

    fingerprint = _File("run.json")
    checkpoint = _File("checkpoint")
    state = _File("state")
    train_pairs = _File("train_pairs.csv")
    gain_forgetting = _File("gain_forgetting.csv")
    before_after_metrics = _File("before_after_metrics.csv")
    summary = _File("finetune.json")

    # what a replaced run leaves to delete (``--overwrite``); the manifest's lock file stays, as everywhere
    RESULTS = ("checkpoint", "state", "train_pairs", "gain_forgetting", "before_after_metrics", "summary", "manifest")


def claim(path: str | Path, fingerprint: dict, overwrite: bool = False, holds_results: bool = True,
          overwrite_flag: str = "--overwrite") -> str:
    """The one rule for a folder that may hold an earlier run: same fingerprint resumes, another is refused.

    An earlier run that left no result (``holds_results`` false: it failed before writing any) never
    blocks the next one: it is replaced as with ``overwrite``.

    Args:
        path: the JSON file holding the folder's fingerprint (written here when claimed).
        overwrite_flag: the option that discards an earlier run, as the refusal names it.

    Returns:
        ``new``, ``same`` (resume or reuse the earlier run) or ``replaced`` (the caller deletes its files).

    Raises:
        RunFolderMismatch: another fingerprint, results and not ``overwrite``; the message names what
            differs and the two ways on.
    """
    state = _judge(Path(path), fingerprint, overwrite or not holds_results, overwrite_flag)
    if state != "same":
        write_json(path, fingerprint)
    return state


def _judge(path: Path, fingerprint: dict, overwrite: bool, overwrite_flag: str = "--overwrite") -> str:
    """:func:`claim`'s outcome, nothing written."""
    earlier = None
    if path.exists():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            earlier = {}
    if earlier == fingerprint:
        return "same"
    if earlier is not None and not overwrite:
        raise RunFolderMismatch(f"{path.parent} holds an earlier run with different "
                                f"{differences(earlier, fingerprint)}; rerun with {overwrite_flag} to discard it, "
                                "or choose another --out folder")
    return "new" if earlier is None else "replaced"


def claim_run(layout: RunLayout, fingerprint: dict, overwrite: bool = False) -> str:
    """:func:`claim` for a scoring run folder, which it marks incomplete until the caller's
    :meth:`RunLayout.mark_complete`.

    The order is the point: judge (nothing written on a mismatch), mark incomplete, delete a replaced
    run's shards and tables, write the fingerprint; so a crash after the judgement leaves the folder
    marked incomplete and no table of the earlier run.
    """
    state = _judge(layout.fingerprint, fingerprint, overwrite or not layout.holds_scores)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.mark_incomplete({"new": "the run started and has not finished",
                            "same": "a resumed run started and has not finished",
                            "replaced": "an earlier run was discarded (--overwrite, or it scored nothing) and the "
                                        "new one has not finished"}[state])
    if state == "replaced":
        shutil.rmtree(layout.shards, ignore_errors=True)
        for name in RunLayout.SCORING_TABLES:
            getattr(layout, name).unlink(missing_ok=True)
    if state != "same":
        write_json(layout.fingerprint, fingerprint)
    return state


def differences(earlier: dict, now: dict) -> str:
    """What differs between two fingerprints, for a message:
    ``checkpoints (['hf:a'] then, ['hf:b'] now) and precision ('fp32' then, 'fp16' now)``.
    A value too long to read in one line (a table's hashes) is named by its key alone."""
    parts = []
    for key in sorted(set(earlier) | set(now)):
        if earlier.get(key) == now.get(key):
            continue
        then, current = repr(earlier.get(key)), repr(now.get(key))
        long = isinstance(now.get(key), dict) or isinstance(earlier.get(key), dict) or len(then + current) > 160
        parts.append(key if long else f"{key} ({then} then, {current} now)")
    if len(parts) > 1:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return parts[0] if parts else "contents"
