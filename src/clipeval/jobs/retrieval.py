"""The retrieval jobs: ``retrieve`` (notebook 04), ``retrieve_benchmarks`` (04, the standard benchmarks against
their published numbers) and ``search`` (05, free-text search: it writes nothing)."""

from __future__ import annotations

import argparse
import html
from dataclasses import dataclass, field
from pathlib import Path

from clipeval.data.options import RetrievalSource, SourceOptions
from clipeval.embed.options import EmbedOptions
from clipeval.eval.options import RetrievalOptions
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, CommandFolder, Job, Part, ReportSection, RunTarget
from clipeval.jobs.scoring import STATS, render_stats
from clipeval.jobs.tables import checkpoint_label, format_value, html_table
from clipeval.layout import RunLayout

RETRIEVAL = ReportSection("retrieval", "Retrieval metrics", 30)
BENCHMARKS = ReportSection("benchmarks", "Standard benchmarks against published numbers", 40)
NO_BENCHMARK = "the profile names no standard benchmark (`benchmarks` in its params file)"


def render_metrics(path: Path) -> str:
    """Retrieval metrics per checkpoint, dataset, direction and k, each beside its chance level and CI."""
    import pandas as pd
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
    import pandas as pd
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


@dataclass(frozen=True)
class WorstQueries:
    """How many of the worst queries ``clipeval retrieve`` prints and writes."""

    worst: int = field(default=0, metadata={
        "metavar": "N", "help": "print the N worst queries of each checkpoint and direction, with their rank and "
                                "relevant item, and write them to retrieval_worst.csv"})


def _retrieve(args: argparse.Namespace) -> None:
    from clipeval.jobs import steps

    source = options_from(args, RetrievalSource, name=Path(args.pairs or args.queries or "retrieval").stem)
    worst = options_from(args, WorstQueries).worst
    run = steps.retrieve(args.out, args.checkpoint, source, options_from(args, SourceOptions),
                         options_from(args, RetrievalOptions), options_from(args, EmbedOptions), worst=worst)
    columns = ["direction", "k", "hit_rate", "hit_rate_chance", "recall", "recall_chance", "mrr", "mrr_chance",
               "note"]
    for spec, rows in run.report.metrics.groupby("checkpoint", sort=False):
        rows = rows.assign(note=["trivial: k >= all " + str(n) if trivial else ""
                                 for n, trivial in zip(rows["n_candidates"], rows["trivial"])])
        print(f"checkpoint {spec}\n{rows[columns].round(4).to_string(index=False)}\n")
    for (spec, direction), rows in run.worst.groupby(["checkpoint", "direction"], sort=False):
        print(f"worst {len(rows)} {direction} queries of {spec} (rank of the relevant item among n_items):")
        for row in rows.itertuples():
            print(f"  rank {row.first_rank:.0f}/{row.n_items}  {_short(row.query_name)!r} -> relevant "
                  f"{_short(row.relevant_name)!r} ({row.relevant_score:.3f}); first {_short(row.top_names[0])!r} "
                  f"({row.top_scores[0]:.3f})")
        print()
    written = ", retrieval_worst.csv" if worst else ""
    print(f"{len(run.dataset.queries)} queries, {len(run.dataset.images)} images -> {args.out} "
          f"(metrics.csv, retrieval_ranks.csv{written}, retrieval_stats.json, retrieval_stats.log)")


def _short(text, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    text = str(text)
    return text if len(text) <= width else text[:width - 1] + "…"


RETRIEVE = Job("retrieve", ("04_retrieval_eval",),
               (Part(RETRIEVAL, lambda run: run.metrics, render_metrics),
                Part(STATS, lambda run: run.retrieval_stats, render_stats)),
               CommandFolder("retrieve", "python -m clipeval retrieve",
                             lambda folder, steps: "retrieve" in steps or RunLayout(folder).metrics.is_file(),
                             lambda run: (run.manifest, run.metrics, run.retrieval_stats),
                             "rerun the same `python -m clipeval retrieve ...` command",
                             lambda folder: ("retrieval_ranks.csv holds every query's rank: sort it to read the worst "
                                             "queries",)),
               (Command("retrieve", "text-to-image / image-to-text retrieval metrics",
                        (RetrievalSource, RunTarget, SourceOptions, RetrievalOptions, EmbedOptions, WorstQueries),
                        _retrieve,
                        example="python -m clipeval retrieve --pairs annotations/captions_val2017.json --images-dir "
                                "val2017 --checkpoint hf:openai/clip-vit-base-patch32 --out outputs/coco-retrieval",
                        takes_spec=True, on_interrupt="run the same command again (the vectors embedded so far are in "
                                                      "the embedding cache)"),))

RETRIEVE_BENCHMARKS = Job("retrieve_benchmarks", ("04_retrieval_eval",),
                          (Part(BENCHMARKS, lambda run: run.published_comparison, render_published, NO_BENCHMARK),
                           Part(BENCHMARKS, lambda run: run.benchmark_metrics, render_metrics, NO_BENCHMARK)))

SEARCH = Job("search", ("05_retrieval_appendix",))
