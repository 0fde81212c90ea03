"""The notebook studies: the dual encoder's benchmark (06), pseudo-labelled eval sets (07), curation (08),
sharded runs (09), and ``explore`` (01: it writes nothing)."""

from __future__ import annotations

import html
from pathlib import Path

from clipeval.jobs.job import Job, Part, ReportSection
from clipeval.jobs.tables import checkpoint_label, html_table, read_json, render_table
from clipeval.layout import CurationLayout

DUAL = ReportSection("dual", "The dual encoder's benchmark", 50)
LABELS = ReportSection("labels", "Pseudo-labelled eval sets", 60)
CURATION = ReportSection("curation", "Curation", 70)
SHARDED = ReportSection("sharded", "Sharded runs", 80)


def render_dual_encoder(path: Path) -> str:
    """The dual encoder's scenes benchmark: retrieval by subset, match scores, hard negatives."""
    import pandas as pd
    summary = read_json(path)
    retrieval = pd.DataFrame(summary["retrieval"]).T.rename_axis("queries").reset_index()
    hard = pd.DataFrame(summary["hard_negatives"]).pivot(index="negative_kind", columns="subset", values="accuracy")
    match = pd.DataFrame([summary["match_scores"]])
    return (f'<p class="meta">{html.escape(summary.get("checkpoint", ""))}, '
            f'split {html.escape(summary.get("split", ""))}</p>'
            f"<h3>Text → image retrieval</h3>{html_table(retrieval)}"
            f"<h3>Matched vs mismatched cosine</h3>{html_table(match)}"
            f"<h3>Hard-negative accuracy (true caption beats its one-attribute twin)</h3>"
            f"{html_table(hard.rename_axis(None, axis=1).reset_index())}")


def render_label_bias(path: Path) -> str:
    """Each checkpoint's metrics on the pseudo-labelled set beside its true twin (@k metrics at k = 5)."""
    import pandas as pd
    bias = pd.read_csv(path)
    at_k = bias["metric"].isin(["hit_rate", "recall"])
    bias = bias[at_k & (bias["k"] == 5) | ~at_k & (bias["k"] == bias["k"].min())]
    bias = bias.assign(checkpoint=bias["checkpoint"].map(checkpoint_label))
    return html_table(bias[["source", "checkpoint", "direction", "metric", "k", "pseudo", "true", "bias"]])


def render_curation_rules(path: Path) -> str:
    """Each preset's share carried to every checkpoint: precision and recall of keeping matched pairs."""
    import pandas as pd
    rules = pd.read_csv(path)
    return html_table(rules.assign(checkpoint=rules["checkpoint"].map(checkpoint_label)))


def render_curation_summary(path: Path) -> str:
    """The challenge set's curation: rows in, kept and dropped per rule."""
    import pandas as pd
    return html_table(pd.read_csv(path, keep_default_na=False))


EXPLORE = Job("explore", ("01_explore_data",))

SCENES_BENCHMARK = Job("scenes_benchmark", ("06_train_dual_encoder",),
                       (Part(DUAL, lambda run: run.dual_encoder_eval, render_dual_encoder),))

LABEL_STUDY = Job("label_study", ("07_build_eval_sets",),
                  (Part(LABELS, lambda run: run.label_quality, render_table),
                   Part(LABELS, lambda run: run.label_metric_bias, render_label_bias)))

CURATION_STUDY = Job("curation_study", ("08_curation",),
                     (Part(CURATION, lambda run: run.curation_rules, render_curation_rules),
                      Part(CURATION, lambda run: CurationLayout(run.challenge_run.root / "curated").summary,
                           render_curation_summary)))

SHARDED_STUDY = Job("sharded_study", ("09_sharded_runs",),
                    (Part(SHARDED, lambda run: run.sharded_executors, render_table),
                     Part(SHARDED, lambda run: CurationLayout(run.sharded_study / "curated").summary,
                          render_curation_summary)))
