"""One step per notebook job: read the inputs, compute, write the run folder's files and manifest entry.

The notebooks and the command line call the same steps, so a run folder is the same whichever
started it. Each step takes the profile's parameters (flat values, as in a notebook's
``parameters`` cell) and returns what the notebook displays; figures are drawn by the notebook
from the returned tables with :mod:`clipeval.plots`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.atomic import write_csv, write_json, write_text
from clipeval.data.benchmarks import BENCHMARKS, benchmark_options, describe_benchmark, load_benchmark
from clipeval.data.fetch import DEFAULT_CACHE_DIR, FetchOptions
from clipeval.data.retrieval_sets import (
    RetrievalSet,
    check_images_found,
    load_retrieval_set,
    retrieval_set_from_pairs,
)
from clipeval.data.scenes import read_scenes_retrieval
from clipeval.data.sources import read_pairs
from clipeval.data.summary import caption_lengths, count_pairs, describe_images
from clipeval.eval.compare import load_run_scores, pivot_scores, spearman_matrix, summarize_scores
from clipeval.eval.curation import (
    PRESET_FRACTIONS,
    Curation,
    TopFraction,
    agreement,
    jaccard,
    kept_fraction_curve,
    parse_rule,
    precision_recall_curve,
    rule_quality,
    wide_scores,
)
from clipeval.eval.curation import curate as curate_rows
from clipeval.eval.embed import EmbedOptions
from clipeval.eval.published import DEFAULT_TOLERANCE, compare_with_published, nothing_to_compare
from clipeval.eval.retrieval import RetrievalReport, evaluate_retrieval, paired_differences
from clipeval.eval.retrieval import search as search_images
from clipeval.eval.scenes_benchmark import evaluate_scenes, similarity_batch
from clipeval.eval.scoring import RESULT_COLUMNS, ScoreOptions, ScoreRun, score_to_dir
from clipeval.eval.stats import format_stats_log
from clipeval.models.catalogue import published_retrieval
from clipeval.models.dual import read_history
from clipeval.models.encoder import Encoder
from clipeval.models.registry import load_encoder
from clipeval.runs.manifest import update_manifest


@dataclass
class Explored:
    """A pairs table described without a model: ``counts``, per-image ``images``, caption ``lengths``."""

    pairs: pd.DataFrame
    counts: pd.Series
    images: pd.DataFrame
    lengths: pd.DataFrame


def explore(pairs_path: str, image_column: str = "image", caption_column: str = "caption") -> Explored:
    """Read a pairs table and describe it: counts, image sizes and modes, caption lengths."""
    pairs = read_pairs(pairs_path, image_column, caption_column)
    return Explored(pairs, count_pairs(pairs, image_column, caption_column), describe_images(pairs, image_column),
                    caption_lengths(pairs, caption_column))


def score(run_dir: str | Path, pairs_path: str, checkpoints: Sequence[str], image_column: str = "image",
          caption_column: str = "caption", batch_size: int = 32, chunk_size: int = 256, device: str = "auto",
          precision: str = "auto", workers: int = 8, source_kind: str = "auto", delimiter: str | None = None,
          images_dir: str | None = None, split: str | None = None, cache_dir: str | None = None,
          fetch_timeout: float = 10.0, fetch_retries: int = 3, max_download_mb: float = 50.0,
          progress: bool = True, decode_workers: int | None = None, fast_decode: bool = False,
          embedding_cache: bool = True, overwrite: bool = False) -> ScoreRun:
    """Score every pair under every checkpoint into ``run_dir`` (results.csv, scores.csv, stats).

    Args:
        run_dir: the run folder.
        pairs_path: any pairs source :func:`clipeval.data.sources.read_pairs` reads.
        checkpoints: checkpoint specs; the first is the primary one in ``results.csv``.
        image_column, caption_column, source_kind, delimiter, images_dir, split: how to read the source.
        batch_size, chunk_size, device, precision, workers: how to run (see :class:`ScoreOptions`).
        cache_dir, fetch_timeout, fetch_retries, max_download_mb: how URLs are fetched.
        progress: show a progress bar.
        decode_workers, fast_decode, embedding_cache: the embedding pipeline (see :class:`ScoreOptions`).
        overwrite: discard an earlier run in ``run_dir`` with other inputs, checkpoints or options.

    Returns:
        The :class:`~clipeval.eval.scoring.ScoreRun` written.
    """
    params = {key: value for key, value in locals().items() if key != "run_dir"}
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    pairs = read_pairs(pairs_path, image_column, caption_column, kind=source_kind, delimiter=delimiter,
                       images_dir=images_dir, split=split, cache_dir=cache)
    fetch = FetchOptions(timeout=fetch_timeout, retries=fetch_retries, max_bytes=int(max_download_mb * 2**20),
                         cache_dir=cache)
    options = ScoreOptions(image_column=image_column, caption_column=caption_column, batch_size=batch_size,
                           chunk_size=chunk_size, device=device, precision=precision, progress=progress,
                           workers=workers, fetch=fetch, decode_workers=decode_workers, fast_decode=fast_decode,
                           embedding_cache=embedding_cache)
    run = score_to_dir(pairs, list(checkpoints), run_dir, options, overwrite=overwrite)
    update_manifest(Path(run_dir) / "manifest.json", "score", params, list(checkpoints), [pairs_path])
    return run


@dataclass
class Comparison:
    """Checkpoints compared on the same pairs.

    Attributes:
        table: the long score table with ``match``.
        summary: :func:`~clipeval.eval.compare.summarize_scores` (also ``score_summary.csv``).
        spearman: checkpoint x checkpoint Spearman correlation of the cosines.
        n_pairs: pairs ok under every checkpoint (those ``spearman`` is over).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    spearman: pd.DataFrame
    n_pairs: int


def compare(run_dir: str | Path) -> Comparison:
    """Compare the checkpoints of a scored run folder; writes ``score_summary.csv``.

    Raises:
        ValueError: ``results.csv`` has no usable ``match`` column.
    """
    table = load_run_scores(run_dir)
    summary = summarize_scores(table)
    write_csv(Path(run_dir) / "score_summary.csv", summary.reset_index())
    return Comparison(table, summary, spearman_matrix(table), len(pivot_scores(table)))


@dataclass
class Retrieval:
    """A retrieval run: the set, the report (metrics and per-query table) and paired differences."""

    dataset: RetrievalSet
    report: RetrievalReport
    differences: pd.DataFrame


def retrieve(run_dir: str | Path, checkpoints: Sequence[str], dataset_name: str = "retrieval",
             pairs_path: str | None = None, queries_path: str | None = None, images_path: str | None = None,
             relevance_path: str | None = None, image_column: str = "image", caption_column: str = "caption",
             images_dir: str | None = None, ks: Sequence[int] = (1, 5, 10), n_resamples: int = 1000, seed: int = 0,
             batch_size: int = 32, device: str = "auto", precision: str = "auto",
             progress: bool = True, distinct_captions: bool = False, workers: int = 8,
             cache_dir: str | None = None, fetch_timeout: float = 10.0, fetch_retries: int = 3,
             max_download_mb: float = 50.0, allow_missing_images: bool = False, decode_workers: int | None = None,
             fast_decode: bool = False, embedding_cache: bool = True) -> Retrieval:
    """Evaluate text->image and image->text retrieval into ``run_dir``.

    Writes ``metrics.csv``, ``retrieval_ranks.csv``, ``retrieval_stats.json`` and
    ``retrieval_stats.log`` (time and memory per checkpoint and stage, as scoring's stats). The set
    comes from a pairs source, or from queries / images / relevance tables when
    ``relevance_path`` is given (see :func:`clipeval.data.retrieval_sets.load_retrieval_set`).
    From a pairs source each matched row is a query; ``distinct_captions`` makes each distinct
    caption string one query instead. When too few image files are found the step stops
    before loading a model (``allow_missing_images`` goes on with the ones found).

    Args:
        batch_size, device, precision, workers: how to run (as for :func:`score`).
        cache_dir, fetch_timeout, fetch_retries, max_download_mb: how URLs are fetched.
        decode_workers, fast_decode, embedding_cache: the embedding pipeline (as for :func:`score`).

    Returns:
        The :class:`Retrieval`; ``differences`` compares every checkpoint with the first
        (paired bootstrap of the text->image reciprocal rank).
    """
    params = {key: value for key, value in locals().items() if key != "run_dir"}
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    dataset = load_retrieval_set(dataset_name, pairs_path or None, queries_path or None, images_path or None,
                                 relevance_path or None, image_column, caption_column, images_dir,
                                 distinct_captions=distinct_captions, cache_dir=cache)
    fetch = FetchOptions(timeout=fetch_timeout, retries=fetch_retries, max_bytes=int(max_download_mb * 2**20),
                         cache_dir=cache)
    options = EmbedOptions(batch_size=batch_size, workers=workers, decode_workers=decode_workers,
                           fast_decode=fast_decode, cache=embedding_cache, fetch=fetch)
    report = evaluate_retrieval(dataset, list(checkpoints), ks=ks, n_resamples=n_resamples, seed=seed,
                                device=device, precision=precision, progress=progress, options=options,
                                allow_missing_images=allow_missing_images)
    out = Path(run_dir)
    _write_retrieval(out, report)
    data_files = [path for path in (pairs_path, queries_path, images_path, relevance_path) if path]
    update_manifest(out / "manifest.json", "retrieve", params, list(checkpoints), data_files, seed=seed)
    differences = paired_differences(report.per_query, list(checkpoints), n_resamples=n_resamples, seed=seed)
    return Retrieval(dataset, report, differences)


def _write_retrieval(out: Path, report: RetrievalReport) -> None:
    """A retrieval report's files: metrics.csv, retrieval_ranks.csv, retrieval_stats.json and .log."""
    write_csv(out / "metrics.csv", report.metrics)
    write_csv(out / "retrieval_ranks.csv", report.per_query)
    # not stats.json: a profile's run folder holds the scoring step's stats too
    write_json(out / "retrieval_stats.json", report.stats)
    write_text(out / "retrieval_stats.log", format_stats_log(report.stats))


@dataclass
class BenchmarkRun:
    """The standard benchmarks of a profile, measured and set beside the published numbers.

    Attributes:
        sets: each benchmark's retrieval set, by name.
        summary: one row per benchmark (:func:`~clipeval.data.benchmarks.describe_benchmark`), with
            ``evaluated``: ``all`` or which part ``max_images`` kept (then not comparable).
        metrics: every benchmark's ``metrics.csv`` rows (the ``dataset`` column names the benchmark).
        comparison: :func:`~clipeval.eval.published.compare_with_published` of ``metrics``.
        tolerance: the deviation tolerance used (points).
        reason: why there is nothing to compare (no benchmark, or no published numbers), or None.
    """

    sets: dict[str, RetrievalSet]
    summary: pd.DataFrame
    metrics: pd.DataFrame
    comparison: pd.DataFrame
    tolerance: float
    reason: str | None

    @property
    def partial(self) -> list[str]:
        """Lines naming each benchmark evaluated on part of its images (numbers not comparable)."""
        cut = self.summary[self.summary["evaluated"] != "all"] if len(self.summary) else self.summary
        return [f"{row.benchmark}: {row.evaluated}; its numbers are not comparable with published ones"
                for row in cut.itertuples()]


def retrieve_benchmarks(run_dir: str | Path, checkpoints: Sequence[str], benchmarks: Mapping[str, Mapping],
                        ks: Sequence[int] = (1, 5, 10), n_resamples: int = 1000, seed: int = 0,
                        batch_size: int = 32, device: str = "auto", precision: str = "auto",
                        tolerance: float = DEFAULT_TOLERANCE, progress: bool = True, workers: int = 8,
                        cache_dir: str | None = None, fetch_timeout: float = 10.0, fetch_retries: int = 3,
                        max_download_mb: float = 50.0, allow_missing_images: bool = False,
                        decode_workers: int | None = None, fast_decode: bool = False,
                        embedding_cache: bool = True) -> BenchmarkRun:
    """Evaluate the standard benchmarks (COCO 5k, Flickr30k 1k) and compare with the published numbers.

    Every benchmark is loaded and its image files checked before any model is loaded
    (:func:`~clipeval.data.benchmarks.load_benchmark`,
    :func:`~clipeval.data.retrieval_sets.check_images_found`), then evaluated as :func:`retrieve`
    does into ``<run_dir>/benchmarks/<name>/`` (metrics.csv, retrieval_ranks.csv, retrieval_stats).
    Writes ``<run_dir>/benchmark_metrics.csv`` (all benchmarks) and
    ``<run_dir>/published_comparison.csv``, and a ``benchmarks`` manifest entry. With no
    benchmark it does nothing and says why.

    Args:
        benchmarks: benchmark name -> source (``kind`` and its options, see
            :data:`~clipeval.data.benchmarks.SOURCE_OPTIONS`).
        tolerance: points beyond the bootstrap CI before a deviation is flagged
            (:data:`~clipeval.eval.published.DEVIATION_RULE`).
        The others: as for :func:`retrieve`.
    """
    params = {key: value for key, value in locals().items() if key != "run_dir"}
    published = published_retrieval(list(checkpoints))
    reason = nothing_to_compare(list(checkpoints), list(benchmarks or {}), published)
    if not benchmarks:
        empty = compare_with_published(pd.DataFrame(columns=["checkpoint", "dataset", "direction", "k", "hit_rate",
                                                             "hit_rate_ci_low", "hit_rate_ci_high"]),
                                       published, tolerance)
        return BenchmarkRun({}, pd.DataFrame(), pd.DataFrame(), empty, tolerance, reason)
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    sets = {name: load_benchmark(name, source, cache) for name, source in benchmarks.items()}
    for dataset in sets.values():
        check_images_found(dataset, allow_missing_images)
    fetch = FetchOptions(timeout=fetch_timeout, retries=fetch_retries, max_bytes=int(max_download_mb * 2**20),
                         cache_dir=cache)
    options = EmbedOptions(batch_size=batch_size, workers=workers, decode_workers=decode_workers,
                           fast_decode=fast_decode, cache=embedding_cache, fetch=fetch)
    out = Path(run_dir)
    metrics = []
    for name, dataset in sets.items():
        report = evaluate_retrieval(dataset, list(checkpoints), ks=ks, n_resamples=n_resamples, seed=seed,
                                    device=device, precision=precision, progress=progress, options=options,
                                    allow_missing_images=allow_missing_images)
        _write_retrieval(out / "benchmarks" / name, report)
        metrics.append(report.metrics)
    metrics = pd.concat(metrics, ignore_index=True)
    comparison = compare_with_published(metrics, published, tolerance)
    write_csv(out / "benchmark_metrics.csv", metrics)
    write_csv(out / "published_comparison.csv", comparison)
    # the annotation files and local datasets (not a Karpathy images folder, nor hub names)
    data_files = [source["path"] for source in benchmarks.values() if not str(source["path"]).startswith("hf:")]
    update_manifest(out / "manifest.json", "benchmarks", params, list(checkpoints), data_files, seed=seed)
    summary = pd.DataFrame([{**describe_benchmark(dataset), "evaluated": _evaluated(name, source, dataset)}
                            for (name, source), dataset in zip(benchmarks.items(), sets.values(), strict=True)])
    return BenchmarkRun(sets, summary, metrics, comparison, tolerance, reason)


def _evaluated(name: str, source: Mapping, dataset: RetrievalSet) -> str:
    """``all``, or the part of a benchmark its ``max_images`` option kept."""
    if benchmark_options(name, source)["max_images"] is None:
        return "all"
    return f"first {len(dataset.images):,} images (max_images) of the {BENCHMARKS[name].n_images:,} checked"


@dataclass
class Search:
    """Free-text search results: the collection, the queries, the top items, each image's caption."""

    dataset: RetrievalSet
    queries: pd.DataFrame
    results: pd.DataFrame
    captions: pd.Series


def search(pairs_path: str, queries: Sequence[str], checkpoints: Sequence[str], dataset_name: str = "search",
           image_column: str = "image", caption_column: str = "caption", top: int = 5, batch_size: int = 32,
           device: str = "auto", precision: str = "auto", embedding_cache: bool = True) -> Search:
    """The ``top`` images of a pairs source's collection for each free-text query, per checkpoint."""
    pairs = read_pairs(pairs_path, image_column, caption_column)
    dataset = retrieval_set_from_pairs(pairs, dataset_name, image_column, caption_column)
    matched = pairs[pairs["match"].astype(bool)] if "match" in pairs else pairs
    caption_of = matched.drop_duplicates(image_column).set_index(image_column)[caption_column]
    captions = dataset.images["image"].map(caption_of)
    results = search_images(dataset, list(checkpoints), list(queries), top=top, device=device, precision=precision,
                            options=EmbedOptions(batch_size=batch_size, cache=embedding_cache))
    return Search(dataset, pd.DataFrame({"text": list(queries)}), results, captions)


@dataclass
class ScenesBenchmark:
    """The dual encoder's notebook: the model, its training history, the dataset and the benchmark."""

    encoder: Encoder
    history: dict
    metadata: dict
    result: dict
    batch: tuple


def scenes_benchmark(run_dir: str | Path, model_dir: str, scenes_dir: str, device: str = "auto",
                     batch_size: int = 256, n_samples: int = 8, seed: int = 0,
                     split: str = "test") -> ScenesBenchmark:
    """Benchmark a trained dual encoder on the scenes; writes ``dual_encoder_eval.json``.

    Returns:
        The encoder, its ``history.json``, the dataset's ``metadata.json``, the benchmark of
        :func:`~clipeval.eval.scenes_benchmark.evaluate_scenes` and a validation batch's
        similarity matrix (:func:`~clipeval.eval.scenes_benchmark.similarity_batch`).
    """
    encoder = load_encoder(f"dual:{model_dir}", device=device)
    result = evaluate_scenes(encoder, scenes_dir, split, batch_size)
    summary = {"checkpoint": encoder.name, "split": split, "retrieval": result["retrieval"].to_dict("index"),
               "match_scores": result["match_scores"], "hard_negatives": result["hard_negatives"].to_dict("records")}
    write_json(Path(run_dir) / "dual_encoder_eval.json", summary)
    batch = similarity_batch(encoder, read_scenes_retrieval(scenes_dir, "val"), n_samples, seed)
    metadata = json.loads((Path(scenes_dir) / "metadata.json").read_text())
    return ScenesBenchmark(encoder, read_history(model_dir), metadata, result, batch)


def curate(run_dir: str | Path, rules: Sequence[str], out_dir: str | Path, caption_column: str = "caption",
           image_column: str = "image") -> Curation:
    """Apply curation rules (their command-line form, :func:`clipeval.eval.curation.parse_rule`) to a scored run.

    Writes to ``out_dir``: ``kept.csv`` (``row_id``), ``dropped.csv`` (``row_id``, ``step``,
    ``reason``), ``curated.csv`` (the kept rows of the input table, every input column, input
    order, with ``row_id``), ``summary.csv`` (rows in, kept and dropped per step) and the manifest.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    result = curate_rows(wide_scores(run_dir, caption_column, image_column), [parse_rule(rule) for rule in rules])
    results = pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""])
    inputs = results.drop(columns=[column for column in RESULT_COLUMNS if column in results.columns])
    write_csv(out_dir / "kept.csv", pd.DataFrame({"row_id": result.kept}))
    write_csv(out_dir / "dropped.csv", result.dropped)
    write_csv(out_dir / "curated.csv", inputs.loc[result.kept].rename_axis("row_id").reset_index())
    write_csv(out_dir / "summary.csv", result.steps)
    update_manifest(out_dir / "manifest.json", "curate", {"run_dir": str(run_dir), "rules": list(rules)}, [],
                    [run_dir / "scores.csv", run_dir / "results.csv"])
    return result


@dataclass
class CurationStudy:
    """Notebook 08: what curation rules keep on a scored run, and how well they keep matched pairs.

    Attributes:
        table: the run's :func:`~clipeval.eval.curation.wide_scores` table.
        curve: kept fraction against the cosine threshold, per checkpoint.
        rules: per checkpoint x rule (the presets carried over as the share of pairs they kept,
            :data:`~clipeval.eval.curation.PRESET_FRACTIONS`): kept, precision, recall.
        pr: precision and recall of matched pairs against the kept fraction, per checkpoint.
        overlap: Jaccard overlap of the checkpoints' top-``fraction`` kept sets.
        agreement: share of pairs on which two checkpoints' top-``fraction`` decisions agree.
        cut: the first checkpoint's cosine at the top-``fraction`` cut (for the examples).
        challenge: the challenge set's curation with the basic filter and a top-``fraction`` rule.
    """

    table: pd.DataFrame
    curve: pd.DataFrame
    rules: pd.DataFrame
    pr: pd.DataFrame
    overlap: pd.DataFrame
    agreement: pd.DataFrame
    cut: float
    challenge: Curation


def curation_study(run_dir: str | Path, challenge_path: str, checkpoints: Sequence[str], fraction: float = 0.3,
                   device: str = "auto", batch_size: int = 32) -> CurationStudy:
    """Study curation on ``run_dir``'s scored pairs (they need a ``match`` column) and on the challenge set.

    Writes ``curation_rules.csv`` and ``curation_precision_recall.csv`` to ``run_dir``, and the
    challenge set's scores and curation under ``run_dir/curation/challenge``.
    """
    run_dir = Path(run_dir)
    table = wide_scores(run_dir)
    if "match" not in table:
        raise ValueError(f"{run_dir / 'results.csv'} has no match column: precision and recall need known pairs")
    specs = [spec for spec in checkpoints if f"cosine[{spec}]" in table]
    rules, kept_sets, curves = [], {}, []
    for spec in specs:
        shares = dict(PRESET_FRACTIONS)
        if fraction not in shares.values():
            shares[f"top {fraction:.0%}"] = fraction
        for name, share in shares.items():
            kept = curate_rows(table, [TopFraction(spec, share)]).kept
            rules.append({"checkpoint": spec, "rule": name, "fraction": share,
                          **rule_quality(table, kept, table["match"])})
        kept_sets[spec] = curate_rows(table, [TopFraction(spec, fraction)]).kept
        curves.append(precision_recall_curve(table, spec, table["match"], np.round(np.arange(0.05, 1.0001, 0.05), 2)))
    first = table.loc[kept_sets[specs[0]], f"cosine[{specs[0]}]"]
    challenge_dir = run_dir / "curation" / "challenge"
    score(challenge_dir, challenge_path, specs, device=device, batch_size=batch_size, progress=False,
          overwrite=True)
    challenge = curate(challenge_dir, ["basic", f"top:{fraction}[{specs[0]}]"], challenge_dir / "curated")
    study = CurationStudy(table, kept_fraction_curve(table, np.round(np.linspace(-0.2, 1.0, 61), 3)),
                          pd.DataFrame(rules), pd.concat(curves, ignore_index=True), jaccard(kept_sets),
                          agreement(kept_sets, table.index), float(first.min()), challenge)
    write_csv(run_dir / "curation_rules.csv", study.rules)
    write_csv(run_dir / "curation_precision_recall.csv", study.pr)
    return study
