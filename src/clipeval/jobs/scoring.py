"""The scoring jobs: ``score`` (a pairs table, notebook 02), ``score_shards`` and ``compare`` (notebooks 02, 03)."""

from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clipeval.data.options import SourceOptions
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection, RunTarget
from clipeval.jobs.tables import checkpoint_label, format_value, html_table, read_json
from clipeval.layout import RunLayout
from clipeval.pipeline.options import ExecutionOptions, ShardOptions

if TYPE_CHECKING:
    import pandas as pd

RUN = ReportSection("run", "The run", 10)
SCORES = ReportSection("scores", "Pair scores", 20)
STATS = ReportSection("stats", "Time and memory", 90)


def render_manifest(path: Path) -> str:
    """The manifest: commit, steps with their checkpoints and data files, package versions."""
    import pandas as pd
    manifest = read_json(path)
    rows = []
    for step, entry in manifest.get("steps", {}).items():
        checkpoints = ", ".join(c["spec"] for c in entry.get("checkpoints", [])) or "-"
        data = ", ".join(d["path"] for d in entry.get("data", [])) or "-"
        rows.append({"step": step, "seed": entry.get("seed"), "checkpoints": checkpoints, "data": data})
    versions = ", ".join(f"{name} {version}" for name, version in manifest.get("versions", {}).items())
    details = (f'<p class="meta">git commit <code>{html.escape(str(manifest.get("git_commit")))}</code>, '
               f'last step {html.escape(str(manifest.get("created_utc")))}; {html.escape(versions)}</p>')
    return details + html_table(pd.DataFrame(rows, columns=["step", "seed", "checkpoints", "data"]))


def render_results(path: Path) -> str:
    """Row count and status counts of ``results.csv`` (the primary checkpoint's rows)."""
    import pandas as pd
    results = pd.read_csv(path, usecols=lambda column: column in {"status", "similarity"},
                          keep_default_na=False, na_values=[""])
    counts = results["status"].value_counts().rename_axis("status").reset_index(name="rows")
    return (f"<p>{len(results):,} rows; the primary checkpoint's mean cosine over ok rows "
            f"{format_value(float(results['similarity'].mean()))}.</p>" + html_table(counts))


def render_score_summary(path: Path) -> str:
    """Matched vs mismatched cosine per checkpoint, with AUC and gap (or every pair's, without a ``match`` column)."""
    import pandas as pd
    summary = pd.read_csv(path)
    summary["checkpoint"] = summary["checkpoint"].map(checkpoint_label)
    columns = ["checkpoint", "n_ok", "n_excluded", "all_mean", "all_std", "all_q05", "all_q50", "all_q95",
               "matched_count", "matched_mean", "matched_q05", "matched_q95", "mismatched_count", "mismatched_mean",
               "mismatched_q05", "mismatched_q95", "auc", "gap"]
    return html_table(summary[[c for c in columns if c in summary.columns]])


def _stats_rows(stats: dict) -> pd.DataFrame:
    import pandas as pd
    rows = []
    for spec, entry in stats.get("checkpoints", {}).items():
        for stage, values in entry.get("stages", {}).items():
            rows.append({"checkpoint": checkpoint_label(spec), "stage": stage, **{k: values.get(k) for k in
                         ("wall_s", "cpu_s", "items", "items_per_s", "peak_rss_mib", "peak_gpu_mib")}})
    return pd.DataFrame(rows)


def render_stats(path: Path) -> str:
    """Time and memory per checkpoint and stage (``stats.json`` or ``retrieval_stats.json``)."""
    import pandas as pd
    stats = read_json(path)
    keys = [k for k in ("pairs", "device", "batch_size", "status_counts") if k in stats]
    meta = "; ".join(f"{key} {html.escape(str(stats[key]))}" for key in keys)
    per_checkpoint = pd.DataFrame([{"checkpoint": checkpoint_label(spec), "model_loaded": entry.get("model_loaded"),
                                    "pairs_per_s": entry.get("pairs_per_s"), "wall_s": entry.get("wall_s"),
                                    "peak_rss_mib": entry.get("peak_rss_mib"), "cache": json.dumps(entry.get("cache"))}
                                   for spec, entry in stats.get("checkpoints", {}).items()]).dropna(axis=1, how="all")
    return f'<p class="meta">{meta}</p>{html_table(per_checkpoint)}{html_table(_stats_rows(stats))}'


def _curate_hint(folder: str) -> str:
    return f"python -m clipeval curate --scores {folder} --rule 'top:30%' --out {folder}/curated"


def _shows(run: RunLayout) -> tuple[Path, ...]:
    return run.manifest, run.results, run.score_summary, run.stats


def _score_hints(folder: str) -> tuple[str, ...]:
    return (_curate_hint(folder),
            f"python -m clipeval retrieve --pairs PAIRS --checkpoint SPEC --out {folder}-retrieval")


def _holds_shards(folder: Path, steps: set[str]) -> bool:
    run = RunLayout(folder)
    return "score_shards" in steps or (run.shard_table.is_file() and not run.results.is_file())


@dataclass(frozen=True)
class ScoreInputs:
    """What ``clipeval score`` scores: one pairs table, or shard files."""

    pairs: str | None = field(default=None, metadata={
        "help": "a pairs source: table (.csv/.tsv/.parquet/.jsonl), image folder, COCO captions_*.json, Hugging Face "
                "save_to_disk folder, or hf:owner/name"})
    shards: tuple[str, ...] | None = field(default=None, metadata={
        "repeat": True, "help": "shard files (tar/parquet/csv), a folder, a glob or a brace pattern like "
                                "'shard-{00000..00099}.tar' (quote it; repeat for several)"})
    overwrite: bool = field(default=False, metadata={
        "help": "discard an earlier run in --out that had other inputs, checkpoints or options"})


def _score(args: argparse.Namespace) -> int:
    from clipeval.jobs import steps

    overwrite = options_from(args, ScoreInputs).overwrite
    if bool(args.pairs) == bool(args.shards):
        raise ValueError("give --pairs (a pairs table: one shard) or --shards (shard files), not both")
    if args.pairs:
        if options_from(args, ExecutionOptions).executor != "local":
            raise ValueError("a pairs table is scored in this process; --executor ray scores shard files (--shards)")
        run = steps.score(args.out, args.pairs, args.checkpoint, options_from(args, SourceOptions),
                          options_from(args, EmbedOptions), options_from(args, ShardOptions).chunk_size, overwrite)
        ok = int((run.results["status"] == "ok").sum())
        print(f"scored {len(run.results)} pairs ({ok} ok) with {len(args.checkpoint)} checkpoint(s) -> {args.out}")
        summary = RunLayout(args.out).score_summary
        if not run.execution["shards_this_run"] and summary.exists():  # a finished run, run again: all is written
            print(f"nothing new to score: {summary} and the figures are this run's; "
                  "--overwrite scores it again from the start")
            return 0
        try:
            comparison = steps.compare(args.out, figures=True)
        except ValueError as error:  # a malformed `match` column: the scores are written, the summary is not
            print(f"warning: no score_summary.csv or figures: {error}", file=sys.stderr)
            return 0
        _print_score_outputs(comparison, args.checkpoint, Path(args.out))
        return 0
    # at scale every pair is new and its vectors would fill the disk: no embedding cache unless asked
    run = steps.score_shards(args.out, args.shards, args.checkpoint, options_from(args, ShardOptions),
                             options_from(args, EmbedOptions, embedding_cache=False),
                             options_from(args, ExecutionOptions), overwrite)
    stats = run.execution
    rate = f", {stats['rows_per_s']:.1f} rows/s" if stats["rows_per_s"] else ""
    print(f"{stats['shards_done']} of {stats['shards']} shards done ({stats['shards_this_run']} scored now: "
          f"{stats['rows_this_run']} rows in {stats['wall_s']:.1f} s{rate}, executor {stats['executor']}) "
          f"-> {args.out}")
    for failed in run.failed.itertuples():
        print(f"shard {failed.shard}: {failed.state}: {failed.error}", file=sys.stderr)
    if len(run.failed):
        print(f"{len(run.failed)} shard(s) not done; run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def _print_score_outputs(comparison, checkpoints: list[str], out: Path) -> None:
    """What a one-table scoring run wrote: the tables, the per-checkpoint summary and the figures."""
    columns = [c for c in ("n_ok", "n_excluded", "all_mean", "all_std", "all_q05", "all_q95", "matched_mean",
                           "mismatched_mean", "auc", "gap")
               if c in comparison.summary.columns]
    print(comparison.summary[columns].round(3).to_string())
    print(f"  results.csv        every input row with the primary checkpoint's scores ({checkpoints[0]})\n"
          f"  scores.csv         one row per pair x checkpoint ({len(dict.fromkeys(checkpoints))} checkpoint(s))\n"
          "  score_summary.csv  the table above, with std and quantiles"
          + ("" if "auc" in comparison.summary.columns else " (no `match` column: every pair in one group)"))
    for path in comparison.figures:
        print(f"  figures/{path.name}")
    print(f"next: python -m clipeval report --run-dir {out}   (one page: tables and figures)")


SCORE_COMMAND = Command(
    "score", "score image-caption pairs with one or more checkpoints: a pairs table (--pairs, one shard) or shard "
             "files (--shards), resumable, locally or on Ray",
    (ScoreInputs, RunTarget, SourceOptions, ShardOptions, ExecutionOptions, EmbedOptions), _score,
    example="python -m clipeval score --pairs data/generated/scenes/pairs_test.csv "
            "--checkpoint dual:outputs/offline/models/dual --checkpoint baseline:bert-resnet50-random "
            "--out outputs/my-run",
    takes_spec=True, on_interrupt="run the same command again to resume (finished chunks/shards are kept)",
    deprecated=(("score-shards", "score --shards"),))

SCORE = Job("score", ("02_score_pairs",),
            (Part(RUN, lambda run: run.manifest, render_manifest),
             Part(SCORES, lambda run: run.results, render_results), Part(STATS, lambda run: run.stats, render_stats)),
            CommandFolder("score", "python -m clipeval score --pairs",
                          lambda folder, steps: "score" in steps or RunLayout(folder).results.is_file(), _shows,
                          "rerun the same `python -m clipeval score --pairs ...` command (it resumes and writes it)",
                          _score_hints, figures=True),
            (SCORE_COMMAND,))

SCORE_SHARDS = Job("score_shards", (), (Part(RUN, lambda run: run.manifest, render_manifest),
                                        Part(STATS, lambda run: run.stats, render_stats)),
                   CommandFolder("sharded score", "python -m clipeval score --shards", _holds_shards,
                                 lambda run: (run.manifest, run.stats),
                                 "rerun the same `python -m clipeval score --shards ...` command (it scores only "
                                 "what is missing)", lambda folder: (_curate_hint(folder),)))

COMPARE = Job("compare", ("02_score_pairs", "03_score_histograms"),
              (Part(SCORES, lambda run: run.score_summary, render_score_summary),))
