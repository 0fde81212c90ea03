"""The scoring jobs: ``score`` (a pairs table, notebook 02), ``score_shards`` and ``compare`` (notebooks 02, 03)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.tables import checkpoint_label, format_value, html_table, read_json
from clipeval.layout import RunLayout

RUN = ReportSection("run", "The run", 10)
SCORES = ReportSection("scores", "Pair scores", 20)
STATS = ReportSection("stats", "Time and memory", 90)


def render_manifest(path: Path) -> str:
    """The manifest: commit, steps with their checkpoints and data files, package versions."""
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
    results = pd.read_csv(path, usecols=lambda column: column in {"status", "similarity"},
                          keep_default_na=False, na_values=[""])
    counts = results["status"].value_counts().rename_axis("status").reset_index(name="rows")
    return (f"<p>{len(results):,} rows; the primary checkpoint's mean cosine over ok rows "
            f"{format_value(float(results['similarity'].mean()))}.</p>" + html_table(counts))


def render_score_summary(path: Path) -> str:
    """Matched vs mismatched cosine per checkpoint, with AUC and gap (or every pair's, without a ``match`` column)."""
    summary = pd.read_csv(path)
    summary["checkpoint"] = summary["checkpoint"].map(checkpoint_label)
    columns = ["checkpoint", "n_ok", "n_excluded", "all_mean", "all_std", "all_q05", "all_q50", "all_q95",
               "matched_count", "matched_mean", "matched_q05", "matched_q95", "mismatched_count", "mismatched_mean",
               "mismatched_q05", "mismatched_q95", "auc", "gap"]
    return html_table(summary[[c for c in columns if c in summary.columns]])


def _stats_rows(stats: dict) -> pd.DataFrame:
    rows = []
    for spec, entry in stats.get("checkpoints", {}).items():
        for stage, values in entry.get("stages", {}).items():
            rows.append({"checkpoint": checkpoint_label(spec), "stage": stage, **{k: values.get(k) for k in
                         ("wall_s", "cpu_s", "items", "items_per_s", "peak_rss_mib", "peak_gpu_mib")}})
    return pd.DataFrame(rows)


def render_stats(path: Path) -> str:
    """Time and memory per checkpoint and stage (``stats.json`` or ``retrieval_stats.json``)."""
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


SCORE = Job("score", ("02_score_pairs",),
            (Part(RUN, lambda run: run.manifest, render_manifest),
             Part(SCORES, lambda run: run.results, render_results), Part(STATS, lambda run: run.stats, render_stats)),
            CommandFolder("score", "python -m clipeval score --pairs",
                          lambda folder, steps: "score" in steps or RunLayout(folder).results.is_file(), _shows,
                          "rerun the same `python -m clipeval score --pairs ...` command (it resumes and writes it)",
                          _score_hints, figures=True))

SCORE_SHARDS = Job("score_shards", (), (Part(RUN, lambda run: run.manifest, render_manifest),
                                        Part(STATS, lambda run: run.stats, render_stats)),
                   CommandFolder("sharded score", "python -m clipeval score --shards", _holds_shards,
                                 lambda run: (run.manifest, run.stats),
                                 "rerun the same `python -m clipeval score --shards ...` command (it scores only "
                                 "what is missing)", lambda folder: (_curate_hint(folder),)))

COMPARE = Job("compare", ("02_score_pairs", "03_score_histograms"),
              (Part(SCORES, lambda run: run.score_summary, render_score_summary),))
