"""One step per job: read the inputs, compute, write the run folder's files and the step's manifest entry.

The notebooks' one entry: a job whose run lives in its own slice (``classify``, ``hard_negatives``) is
imported here, so every notebook calls ``steps.<job>``.

The notebooks and the command line call the same steps, so a run folder is the same whichever started
it. A step takes its inputs and the options of each concern (:class:`~clipeval.data.sources.SourceOptions`,
:class:`~clipeval.embed.engine.EmbedOptions`, :class:`~clipeval.eval.retrieval.RetrievalOptions`...),
writes through :class:`~clipeval.layout.RunLayout` and returns what the notebook displays; figures are
drawn by the notebook from the returned tables with :mod:`clipeval.plots`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from clipeval.atomic import write_csv, write_json, write_text
from clipeval.curate.engine import RunCuration, curate_run, run_checkpoints
from clipeval.curate.options import EXACT_LIMIT
from clipeval.curate.rules import parse_rule
from clipeval.data.benchmarks import BENCHMARKS, benchmark_options, describe_benchmark, load_benchmark
from clipeval.data.options import SourceOptions
from clipeval.data.retrieval_sets import (
    RetrievalSet,
    RetrievalSource,
    check_images_found,
    load_retrieval_set,
)
from clipeval.data.scenes import read_scenes_retrieval
from clipeval.data.shards import list_shards
from clipeval.data.sources import read_pairs
from clipeval.data.summary import caption_lengths, count_pairs, describe_images
from clipeval.embed.options import EmbedOptions
from clipeval.embed.stats import format_stats_log
from clipeval.eval.options import RetrievalOptions
from clipeval.finder.options import IndexOptions
from clipeval.jobs.hard_negatives import hard_negatives  # noqa: F401 (notebooks call steps.hard_negatives)
from clipeval.jobs.manifest import update_manifest
from clipeval.jobs.zero_shot import classify  # noqa: F401 (notebooks call steps.classify)
from clipeval.layout import CurationLayout, RunLayout
from clipeval.metrics.published import DEFAULT_TOLERANCE, compare_with_published, nothing_to_compare
from clipeval.models.catalogue import published_retrieval
from clipeval.models.registry import load_encoder
from clipeval.pipeline.options import ExecutionOptions, ShardOptions
from clipeval.pipeline.run import ScoringRun, score_pairs_table, score_run
from clipeval.studies.curation import CurationStudy, compute_curation_study
from clipeval.warn import warn

if TYPE_CHECKING:  # torch, scipy and the model libraries are imported by the steps that use them, so that a
    # re-run of a finished score step answers without them
    from clipeval.eval.retrieval import RetrievalReport
    from clipeval.finder.index import IndexBuild
    from clipeval.finder.search import FinderIndex
    from clipeval.models.encoder import Encoder
    from clipeval.studies.finetune_modes import FinetuneStudy
    from clipeval.studies.labels import LabelStudy
    from clipeval.studies.sharded import ShardedStudy
    from clipeval.train.options import FinetuneConfig


def _settings(**options) -> dict:
    """A step's parameters for its manifest entry: option dataclasses as dicts, paths as strings."""
    return {name: asdict(value) if hasattr(value, "__dataclass_fields__") else value
            for name, value in options.items()}


@dataclass
class Explored:
    """A pairs table described without a model: ``counts``, per-image ``images``, caption ``lengths``."""

    pairs: pd.DataFrame
    counts: pd.Series
    images: pd.DataFrame
    lengths: pd.DataFrame


def explore(pairs_path: str, reading: SourceOptions = SourceOptions()) -> Explored:
    """Read a pairs table and describe it: counts, image sizes and modes, caption lengths."""
    pairs = read_pairs(pairs_path, **asdict(reading))
    return Explored(pairs, count_pairs(pairs, reading.image_column, reading.caption_column),
                    describe_images(pairs, reading.image_column), caption_lengths(pairs, reading.caption_column))


def score(run_dir: str | Path, pairs_path: str, checkpoints: Sequence[str], reading: SourceOptions = SourceOptions(),
          embed: EmbedOptions = EmbedOptions(), chunk_size: int = ShardOptions.chunk_size,
          overwrite: bool = False) -> ScoringRun:
    """Score every pair of a pairs source under every checkpoint: a one-shard run of the pipeline.

    Writes ``shards/pairs.parquet`` (and its done-marker), ``results.csv``, ``scores.csv``,
    ``stats.json``/``stats.log`` and the manifest (:mod:`clipeval.pipeline.run`).

    Args:
        run_dir: the run folder.
        pairs_path: any pairs source :func:`clipeval.data.sources.read_pairs` reads.
        checkpoints: checkpoint specs; the first is the primary one in ``results.csv``.
        reading: how to read the source (columns, kind, delimiter, COCO images, split).
        embed: the embedding pipeline (device, precision, batching, cache, image reading, progress).
        chunk_size: rows scored and kept together (the unit of resuming).
        overwrite: discard an earlier run in ``run_dir`` with other inputs, checkpoints or options.
    """
    pairs = read_pairs(pairs_path, **asdict(reading), cache_dir=embed.fetch.image_cache_dir)
    shards = ShardOptions(reading.image_column, reading.caption_column, chunk_size=chunk_size)
    run = score_pairs_table(run_dir, pairs, list(checkpoints), shards, embed, overwrite)
    update_manifest(RunLayout(run_dir).manifest, "score",
                    _settings(pairs_path=pairs_path, reading=reading, embed=embed, chunk_size=chunk_size),
                    list(checkpoints), [pairs_path], warnings=run.stats.get("warnings"))
    return run


def score_shards(run_dir: str | Path, shards: Sequence[str], checkpoints: Sequence[str],
                 shard_options: ShardOptions = ShardOptions(), embed: EmbedOptions = EmbedOptions(),
                 execution: ExecutionOptions = ExecutionOptions(), overwrite: bool = False) -> ScoringRun:
    """Score shard files (tar, parquet, csv; files, folders, globs, brace patterns) into ``run_dir``.

    Writes ``shards/``, ``shards.csv``, ``sharded_stats.json``, ``stats.json``/``stats.log`` and the
    manifest; resumable by shard and by chunk (:mod:`clipeval.pipeline.run`).
    """
    paths = list_shards(list(shards) if not isinstance(shards, str) else shards)
    run = score_run(run_dir, list(paths), list(checkpoints), shard_options, embed, execution, overwrite)
    update_manifest(RunLayout(run_dir).manifest, "score_shards",
                    _settings(shards=list(shards), shard_options=shard_options, embed=embed, execution=execution),
                    list(checkpoints), [str(path) for path in paths], warnings=run.stats.get("warnings"))
    return run


@dataclass
class Comparison:
    """Checkpoints compared on the same pairs.

    Attributes:
        table: the long score table with ``match``.
        summary: :func:`~clipeval.metrics.compare.summarize_scores` (also ``score_summary.csv``).
        spearman: checkpoint x checkpoint Spearman correlation of the cosines.
        n_pairs: pairs ok under every checkpoint (those ``spearman`` is over).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    spearman: pd.DataFrame
    n_pairs: int
    figures: list[Path] = field(default_factory=list)


def compare(run_dir: str | Path, figures: bool = False) -> Comparison:
    """Compare the checkpoints of a scored run folder; writes ``score_summary.csv``.

    Pairs marked by a ``match`` column are summarised as matched vs mismatched (AUC, gap); a table
    without one (your own pairs) as one group, ``all``.

    Args:
        run_dir: a run folder scored from one table (``results.csv`` and ``scores.csv``).
        figures: also draw notebook 03's figures into ``figures/`` (what ``score --pairs`` does):
            ``score_histograms_cosine.png``, ``score_histograms_percentile.png`` (only with
            ``match``: without it every checkpoint's percentiles are flat) and, with two
            checkpoints or more, ``score_spearman.png``; their paths are in ``figures``.

    Raises:
        RunIncomplete: the run did not finish.
        ValueError: ``results.csv`` has a malformed ``match`` column.
    """
    from clipeval.metrics.compare import load_run_scores, pivot_scores, spearman_matrix, summarize_scores

    layout = RunLayout(run_dir)
    table = load_run_scores(layout, match_required=False)
    summary = summarize_scores(table)
    write_csv(layout.score_summary, summary.reset_index())
    comparison = Comparison(table, summary, spearman_matrix(table), len(pivot_scores(table)))
    if figures and (table["status"] == "ok").any():
        comparison.figures = _score_figures(layout, comparison)
    return comparison


def _score_figures(layout: RunLayout, comparison: Comparison) -> list[Path]:
    """Notebook 03's figures of a compared run, saved under ``figures/``; returns their paths."""
    from matplotlib import pyplot as plt

    from clipeval.metrics.compare import add_percentiles
    from clipeval.plots.scores import plot_score_histograms, plot_spearman_heatmap

    drawn = [layout.figures / "score_histograms_cosine.png"]
    plt.close(plot_score_histograms(comparison.table, "cosine", path=drawn[-1]))
    if "match" in comparison.table:
        drawn.append(layout.figures / "score_histograms_percentile.png")
        plt.close(plot_score_histograms(add_percentiles(comparison.table), "percentile", bins=20, path=drawn[-1]))
    if len(comparison.spearman.columns) >= 2 and comparison.n_pairs >= 2:
        drawn.append(layout.figures / "score_spearman.png")
        plt.close(plot_spearman_heatmap(comparison.spearman, comparison.n_pairs, "cosine", path=drawn[-1]))
    return drawn


@dataclass
class Retrieval:
    """A retrieval run: the set, the report (metrics and per-query table), paired differences and the
    ``worst`` queries asked for (:func:`~clipeval.eval.retrieval.worst_queries`; no row when none)."""

    dataset: RetrievalSet
    report: RetrievalReport
    differences: pd.DataFrame
    worst: pd.DataFrame


def retrieve(run_dir: str | Path, checkpoints: Sequence[str], source: RetrievalSource,
             reading: SourceOptions = SourceOptions(), options: RetrievalOptions = RetrievalOptions(),
             embed: EmbedOptions = EmbedOptions(), worst: int = 0) -> Retrieval:
    """Evaluate text->image and image->text retrieval into ``run_dir``.

    Writes ``metrics.csv``, ``retrieval_ranks.csv``, ``retrieval_stats.json`` and
    ``retrieval_stats.log`` (time and memory per checkpoint and stage, as scoring's stats), and with
    ``worst`` ``retrieval_worst.csv``. The set comes from a pairs source, or from queries / images /
    relevance tables (:func:`clipeval.data.retrieval_sets.load_retrieval_set`). When too few image
    files are found the step stops before loading a model (``options.allow_missing_images`` goes on).
    The report's warnings (:mod:`clipeval.eval.caveats`) are printed on stderr and kept in
    ``retrieval_stats.json`` and the manifest.

    Args:
        worst: also keep the ``worst`` worst queries of each checkpoint and direction.

    Returns:
        The :class:`Retrieval`; ``differences`` compares every checkpoint with the first
        (paired bootstrap of the text->image reciprocal rank).
    """
    from clipeval.eval.retrieval import evaluate_retrieval, paired_differences, ranks_table, worst_queries

    dataset = load_retrieval_set(source, reading, embed.fetch.image_cache_dir)
    report = evaluate_retrieval(dataset, list(checkpoints), options, embed)
    layout = RunLayout(run_dir)
    _write_retrieval(layout, report)
    worst_rows = worst_queries(report.per_query, max(worst, 0))
    if worst > 0:
        write_csv(layout.retrieval_worst, ranks_table(worst_rows))
    update_manifest(layout.manifest, "retrieve", _settings(source=source, reading=reading, options=options,
                                                           embed=embed, worst=worst),
                    list(checkpoints), source.files(), seed=options.seed, warnings=warn(report.warnings))
    differences = paired_differences(report.per_query, list(checkpoints), n_resamples=options.n_resamples,
                                     seed=options.seed)
    return Retrieval(dataset, report, differences, worst_rows)


def _write_retrieval(layout: RunLayout, report: RetrievalReport) -> None:
    """A retrieval report's files: metrics.csv, retrieval_ranks.csv, retrieval_stats.json and .log."""
    from clipeval.eval.retrieval import ranks_table

    write_csv(layout.metrics, report.metrics)
    write_csv(layout.retrieval_ranks, ranks_table(report.per_query))
    write_json(layout.retrieval_stats, report.stats)
    write_text(layout.retrieval_stats_log, format_stats_log(report.stats))


@dataclass
class BenchmarkRun:
    """The standard benchmarks of a profile, measured and set beside the published numbers.

    Attributes:
        sets: each benchmark's retrieval set, by name.
        summary: one row per benchmark (:func:`~clipeval.data.benchmarks.describe_benchmark`), with
            ``evaluated``: ``all`` or which part ``max_images`` kept (then not comparable).
        metrics: every benchmark's ``metrics.csv`` rows (the ``dataset`` column names the benchmark).
        comparison: :func:`~clipeval.metrics.published.compare_with_published` of ``metrics``.
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
                        options: RetrievalOptions = RetrievalOptions(), embed: EmbedOptions = EmbedOptions(),
                        tolerance: float = DEFAULT_TOLERANCE) -> BenchmarkRun:
    """Evaluate the standard benchmarks (COCO 5k, Flickr30k 1k, Pokémon) and compare with the published numbers.

    Every benchmark is loaded and its image files checked before any model is loaded
    (:func:`~clipeval.data.benchmarks.load_benchmark`,
    :func:`~clipeval.data.retrieval_sets.check_images_found`), then evaluated as :func:`retrieve`
    does into ``<run_dir>/benchmarks/<name>/``. Writes ``benchmark_metrics.csv`` (all benchmarks),
    ``published_comparison.csv`` and a ``benchmarks`` manifest entry. With no benchmark it does
    nothing and says why.

    Args:
        benchmarks: benchmark name -> source (``kind`` and its options, see
            :data:`~clipeval.data.benchmarks.SOURCE_OPTIONS`).
        tolerance: points beyond the bootstrap CI before a deviation is flagged
            (:data:`~clipeval.metrics.published.DEVIATION_RULE`).
        The others: as for :func:`retrieve`.
    """
    from clipeval.eval.retrieval import evaluate_retrieval

    published = published_retrieval(list(checkpoints))
    reason = nothing_to_compare(list(checkpoints), list(benchmarks or {}), published)
    if not benchmarks:
        empty = compare_with_published(pd.DataFrame(columns=["checkpoint", "dataset", "direction", "k", "hit_rate",
                                                             "hit_rate_ci_low", "hit_rate_ci_high"]),
                                       published, tolerance)
        return BenchmarkRun({}, pd.DataFrame(), pd.DataFrame(), empty, tolerance, reason)
    cache = embed.fetch.image_cache_dir
    sets = {name: load_benchmark(name, source, cache) for name, source in benchmarks.items()}
    for dataset in sets.values():
        check_images_found(dataset, options.allow_missing_images)
    layout = RunLayout(run_dir)
    metrics, warnings = [], []
    for name, dataset in sets.items():
        report = evaluate_retrieval(dataset, list(checkpoints), options, embed)
        _write_retrieval(layout.benchmark(name), report)
        metrics.append(report.metrics)
        warnings += warn(report.warnings)
    metrics = pd.concat(metrics, ignore_index=True)
    comparison = compare_with_published(metrics, published, tolerance)
    write_csv(layout.benchmark_metrics, metrics)
    write_csv(layout.published_comparison, comparison)
    # the annotation files and local datasets (not a Karpathy images folder, nor hub names)
    data_files = [source["path"] for source in benchmarks.values() if not str(source["path"]).startswith("hf:")]
    update_manifest(layout.manifest, "retrieve_benchmarks", _settings(benchmarks=dict(benchmarks), options=options,
                                                             embed=embed, tolerance=tolerance),
                    list(checkpoints), data_files, seed=options.seed, warnings=warnings)
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
    """Free-text search results from the finder's index of a collection.

    Attributes:
        index: the index (one item per image, with its matched captions).
        queries: the queries (``text``).
        results: one row per checkpoint x query: ``checkpoint``, ``query`` (its position), ``top_items``
            (positions in ``index.items``) and ``top_scores`` (cosine), best first.
        images: the items' thumbnails (``image``: absolute paths), by item position.
        captions: each item's first caption, by item position.
    """

    index: FinderIndex
    queries: pd.DataFrame
    results: pd.DataFrame
    images: pd.DataFrame
    captions: pd.Series


def search(run_dir: str | Path, pairs_path: str, queries: Sequence[str], checkpoints: Sequence[str],
           dataset_name: str = "search", reading: SourceOptions = SourceOptions(), top: int = 5,
           embed: EmbedOptions = EmbedOptions()) -> Search:
    """Notebook 05: the ``top`` images of a pairs source's collection for each free-text query, per checkpoint,
    searched exactly by the finder (the collection indexed into the run's ``finder/<dataset_name>/``)."""
    from clipeval.finder.index import build_index
    from clipeval.finder.search import FinderIndex

    folder = RunLayout(run_dir).finder_index(dataset_name)
    build_index(pairs_path, list(checkpoints), folder, reading, embed)
    index = FinderIndex.open(folder, embed)
    position = {item_id: n for n, item_id in enumerate(index.items["id"])}
    rows = []
    for spec in checkpoints:
        for query, text in enumerate(queries):
            hits = index.search_text(text, spec, top, exact=True)
            rows.append({"checkpoint": spec, "query": query, "top_items": [position[hit.id] for hit in hits],
                         "top_scores": [hit.score for hit in hits]})
    update_manifest(RunLayout(run_dir).manifest, "search",
                    _settings(pairs_path=pairs_path, queries=list(queries), reading=reading, top=top, embed=embed),
                    list(checkpoints), [pairs_path])
    thumbnails = pd.DataFrame({"image": [str(index.layout.thumbnails / f"{item_id}.jpg") for item_id in position]})
    return Search(index, pd.DataFrame({"text": list(queries)}), pd.DataFrame(rows), thumbnails,
                  index.items["caption"])


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
    from clipeval.eval.scenes_benchmark import evaluate_scenes, similarity_batch
    from clipeval.models.dual import read_history

    encoder = load_encoder(f"dual:{model_dir}", device=device)
    result = evaluate_scenes(encoder, scenes_dir, split, batch_size)
    summary = {"checkpoint": encoder.name, "split": split, "retrieval": result["retrieval"].to_dict("index"),
               "match_scores": result["match_scores"], "hard_negatives": result["hard_negatives"].to_dict("records")}
    write_json(RunLayout(run_dir).dual_encoder_eval, summary)
    batch = similarity_batch(encoder, read_scenes_retrieval(scenes_dir, "val"), n_samples, seed)
    metadata = json.loads((Path(scenes_dir) / "metadata.json").read_text())
    return ScenesBenchmark(encoder, read_history(model_dir), metadata, result, batch)


def curate(run_dir: str | Path, rules: Sequence[str], out_dir: str | Path, exact_limit: int = EXACT_LIMIT,
           write_filtered: bool = False, progress: bool = True) -> RunCuration:
    """Apply curation rules (their command-line form, :func:`clipeval.curate.rules.parse_rule`) to a scored run.

    The one engine at any scale (:mod:`clipeval.curate.engine`): writes ``summary.csv`` (rows in, kept
    and dropped per step), ``decisions/<shard>.parquet``, ``kept_uids.parquet``, on request the
    filtered input shards and, for a one-table run (``score --pairs``), ``kept.csv`` (``row_id``),
    ``dropped.csv`` (``row_id``, ``step``, ``reason``, the row's ``score`` under the rule and the rule's
    ``cut``) and ``curated.csv`` (the kept input rows with every input column), and the manifest. Rules
    apply in the order given; one written without ``[SPEC]`` cuts the run's primary (first) checkpoint.
    """
    out, run = CurationLayout(out_dir), RunLayout(run_dir)
    primary = next(iter(run_checkpoints(run)), None)
    result = curate_run(run, [parse_rule(rule, primary) for rule in rules], out, exact_limit, write_filtered,
                        progress)
    update_manifest(out.manifest, "curate", {"run_dir": str(run_dir), "rules": list(rules),
                                             "exact_limit": exact_limit, "write_filtered": write_filtered},
                    [], [str(run_dir)])
    return result


def curation_study(run_dir: str | Path, challenge_path: str, checkpoints: Sequence[str], fraction: float = 0.3,
                   embed: EmbedOptions = EmbedOptions()) -> CurationStudy:
    """Notebook 08 (:func:`clipeval.studies.curation.compute_curation_study`), with its manifest entry."""
    study = compute_curation_study(run_dir, challenge_path, checkpoints, fraction, embed)
    update_manifest(RunLayout(run_dir).manifest, "curation_study",
                    _settings(challenge_path=challenge_path, fraction=fraction, embed=embed), list(checkpoints),
                    [challenge_path])
    return study


def label_study(run_dir: str | Path, scenes_dir: str | Path, sources: dict[str, dict], checkpoints: Sequence[str],
                split: str = "test", options: RetrievalOptions = RetrievalOptions(),
                embed: EmbedOptions = EmbedOptions()) -> list[LabelStudy]:
    """Notebook 07 (:func:`clipeval.studies.labels.compute_label_study`), with its manifest entry."""
    from clipeval.studies.labels import compute_label_study

    studies = compute_label_study(run_dir, scenes_dir, sources, checkpoints, split, options, embed)
    update_manifest(RunLayout(run_dir).manifest, "label_study",
                    _settings(sources=sources, split=split, options=options, embed=embed), list(checkpoints),
                    [str(Path(scenes_dir) / "scenes.csv")], seed=options.seed)
    return studies


def sharded_study(run_dir: str | Path, pairs_path: str, checkpoint: str, n_shards: int = 8,
                  executors: Sequence[str] = ("local", "ray"), ray_actors: int = 2, rule: str = "top:0.3[{spec}]",
                  embed: EmbedOptions = EmbedOptions()) -> ShardedStudy:
    """Notebook 09 (:func:`clipeval.studies.sharded.compute_sharded_study`), with its manifest entry."""
    from clipeval.studies.sharded import compute_sharded_study

    study = compute_sharded_study(run_dir, pairs_path, checkpoint, n_shards, executors, ray_actors, rule, embed)
    update_manifest(RunLayout(run_dir).manifest, "sharded_study",
                    _settings(n_shards=n_shards, executors=list(executors), ray_actors=ray_actors, rule=rule,
                              embed=embed), [checkpoint], [pairs_path])
    return study


def finetune_study(run_dir: str | Path, base_spec: str, scenes_dir: str | Path, modes: dict[str, float],
                   config: FinetuneConfig, n_resamples: int = 1000) -> FinetuneStudy:
    """Notebook 11 (:func:`clipeval.studies.finetune_modes.compute_finetune_study`), with its manifest entry; each
    mode's checkpoint goes to ``<run_dir>/models/finetune/<mode>``."""
    from clipeval.studies.finetune_modes import compute_finetune_study

    study = compute_finetune_study(base_spec, scenes_dir, Path(run_dir) / "models" / "finetune", run_dir, modes,
                                   config, n_resamples)
    update_manifest(RunLayout(run_dir).manifest, "finetune_study",
                    _settings(modes=modes, config=config, n_resamples=n_resamples), [base_spec],
                    [str(Path(scenes_dir) / "pairs_train.csv")], seed=config.seed)
    return study


def index(run_dir: str | Path, source: str, checkpoints: Sequence[str], reading: SourceOptions = SourceOptions(),
          embed: EmbedOptions = EmbedOptions(), options: IndexOptions = IndexOptions()) -> IndexBuild:
    """Notebook 10: index ``source`` (:func:`clipeval.finder.index.build_index`) into the run's
    ``finder/<source's name>/``, with a manifest entry in the run folder; returns the build's counts."""
    from clipeval.finder.index import build_index

    built = build_index(source, list(checkpoints), RunLayout(run_dir).finder_index(Path(source).stem), reading,
                        embed, options)
    update_manifest(RunLayout(run_dir).manifest, "index", _settings(reading=reading, embed=embed, options=options),
                    list(checkpoints), [source])
    return built
