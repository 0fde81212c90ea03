"""The retrieval jobs: ``retrieve`` (notebook 04), ``retrieve_benchmarks`` (04, the standard benchmarks against
their published numbers) and ``search`` (05, free-text search: it writes nothing)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from clipeval.jobs.job import CommandFolder, Job, Part, ReportSection
from clipeval.jobs.scoring import STATS, render_stats
from clipeval.jobs.tables import checkpoint_label, format_value, html_table
from clipeval.layout import RunLayout

RETRIEVAL = ReportSection("retrieval", "Retrieval metrics", 30)
BENCHMARKS = ReportSection("benchmarks", "Standard benchmarks against published numbers", 40)
NO_BENCHMARK = "the profile names no standard benchmark (`benchmarks` in its params file)"


def render_metrics(path: Path) -> str:
    """Retrieval metrics per checkpoint, dataset, direction and k, each beside its chance level and CI."""
    metrics = pd.read_csv(path)
    table = metrics[["checkpoint", "dataset", "direction", "k", "n_queries", "n_images"]].copy()
    table["checkpoint"] = table["checkpoint"].map(checkpoint_label)
    for metric in ("hit_rate", "recall", "mrr", "median_rank"):
        table[metric] = metrics[metric]
        if metric in ("hit_rate", "mrr"):
            table[f"{metric} 95% CI"] = [f"{format_value(low)}–{format_value(high)}" for low, high
                                         in zip(metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"], strict=True)]
        table[f"{metric} chance"] = metrics[f"{metric}_chance"]
    return html_table(table)


def render_published(path: Path) -> str:
    """Measured HitRate@k on the standard benchmarks beside the published values; deviations first, with hints."""
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    flagged = table["flagged"].astype(str).str.lower().eq("true")
    table = table.assign(checkpoint=table["checkpoint"].map(checkpoint_label))
    columns = ["status", "checkpoint", "dataset", "direction", "k", "measured", "ci_low", "ci_high", "published",
               "difference", "tolerance", "source"]
    if not flagged.any():
        return ('<p class="meta">No measured value deviates from a published one beyond the tolerance.</p>'
                + html_table(table[columns]))
    hints = []
    for row in table[flagged].itertuples():
        line = (f"{row.checkpoint}, {row.dataset} {row.direction} @{row.k}: measured {row.measured:.1f}, "
                f"published {row.published:.1f}. {row.hint}")
        hints.append(f"<li>{html.escape(line)}</li>")
    head = (f'<div class="warning"><span class="badge">{int(flagged.sum())} deviate</span> beyond the tolerance '
            f"and the bootstrap CI:<ul>{''.join(hints)}</ul></div>")
    return head + html_table(pd.concat([table[flagged], table[~flagged]])[columns])


RETRIEVE = Job("retrieve", ("04_retrieval_eval",),
               (Part(RETRIEVAL, lambda run: run.metrics, render_metrics),
                Part(STATS, lambda run: run.retrieval_stats, render_stats)),
               CommandFolder("retrieve", "python -m clipeval retrieve",
                             lambda folder, steps: "retrieve" in steps or RunLayout(folder).metrics.is_file(),
                             lambda run: (run.manifest, run.metrics, run.retrieval_stats),
                             "rerun the same `python -m clipeval retrieve ...` command",
                             lambda folder: ("retrieval_ranks.csv holds every query's rank: sort it to read the worst "
                                             "queries",)))

RETRIEVE_BENCHMARKS = Job("retrieve_benchmarks", ("04_retrieval_eval",),
                          (Part(BENCHMARKS, lambda run: run.published_comparison, render_published, NO_BENCHMARK),
                           Part(BENCHMARKS, lambda run: run.benchmark_metrics, render_metrics, NO_BENCHMARK)))

SEARCH = Job("search", ("05_retrieval_appendix",))
