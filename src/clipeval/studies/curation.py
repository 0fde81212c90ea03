"""Notebook 08's study: what curation rules keep of a scored run, how well, and how the checkpoints agree
(docs/curation.md). Only the notebook calls this; the rules and the engine are :mod:`clipeval.curate`.

The published rules are carried to each checkpoint as the share of pairs they kept (:data:`PRESET_FRACTIONS`),
because a threshold means something only for the model it was set on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.atomic import write_csv
from clipeval.curate.engine import RunCuration, curate_run, curate_table
from clipeval.curate.rules import TopFraction, parse_rule
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.layout import CurationLayout, RunLayout, score_column
from clipeval.pipeline.options import ShardOptions
from clipeval.pipeline.run import score_pairs_table
from clipeval.pipeline.views import input_columns


def scored_table(run: RunLayout) -> pd.DataFrame:
    """A one-table run's scored pairs (index ``row_id``): ``image``, ``caption``, ``match`` when the input has
    it, the image size, and per checkpoint ``cosine[<spec>]``, ``clip_score_100[<spec>]``,
    ``caption_truncated[<spec>]`` and ``status[<spec>]``. Raises ``RunIncomplete`` for an unfinished run."""
    run.require_complete()
    [shard] = run.scored_shards()
    scored = pd.read_parquet(shard)
    fingerprint = json.loads(run.fingerprint.read_text())
    checkpoints = fingerprint["checkpoints"]
    inputs = input_columns(scored, checkpoints)
    table = pd.DataFrame({"image": inputs[fingerprint["image_column"]].astype(str).to_numpy(),
                          "caption": inputs[fingerprint["caption_column"]].astype(str).to_numpy()},
                         index=pd.RangeIndex(len(scored), name="row_id"))
    if "match" in inputs:
        table["match"] = inputs["match"].astype(str).str.lower().isin(("true", "1", "yes")).to_numpy()
    table["image_width"], table["image_height"] = scored["image_width"].array, scored["image_height"].array
    for spec in checkpoints:
        for name in ("cosine", "clip_score_100", "caption_truncated", "status"):
            table[score_column(name, spec)] = scored[score_column(name, spec)].to_numpy()
    return table


PRESET_FRACTIONS = {"laion400m": 0.20, "laion2b": 0.30, "datacomp-l14-30pct": 0.30}
"""Each score preset as the share of DataComp's CommonPool it kept (Table 16), to carry it to any checkpoint."""


def checkpoints_of(table: pd.DataFrame) -> list[str]:
    """The checkpoints a :func:`scored_table` holds scores for."""
    return [column[len("status["):-1] for column in table.columns if column.startswith("status[")]


def kept_fraction_curve(table: pd.DataFrame, thresholds) -> pd.DataFrame:
    """Per checkpoint and threshold: the share of ok rows with cosine >= threshold."""
    rows = []
    for spec in checkpoints_of(table):
        values = table.loc[table[score_column("status", spec)] == "ok", score_column("cosine", spec)]
        rows += [{"checkpoint": spec, "threshold": float(t), "kept_fraction": float((values >= t).mean())}
                 for t in thresholds]
    return pd.DataFrame(rows)


def rule_quality(table: pd.DataFrame, kept: pd.Index, match: pd.Series) -> dict:
    """How well a kept set keeps the matched pairs: precision (matched share of kept) and recall
    (kept share of matched, over every row), and the kept fraction."""
    matched = set(match.index[match.astype(bool)])
    kept = set(kept)
    correct = len(kept & matched)
    return {"kept": len(kept), "kept_fraction": len(kept) / len(table) if len(table) else math.nan,
            "precision": correct / len(kept) if kept else math.nan,
            "recall": correct / len(matched) if matched else math.nan}


def precision_recall_curve(table: pd.DataFrame, spec: str, match: pd.Series, fractions) -> pd.DataFrame:
    """Keeping the top fraction f by ``spec``'s cosine, for each f: precision and recall of matched pairs."""
    return pd.DataFrame([{"checkpoint": spec, "fraction": f,
                          **rule_quality(table, curate_table(table, [TopFraction(spec, f)]).kept, match)}
                         for f in fractions])


def jaccard(kept_sets: dict[str, pd.Index]) -> pd.DataFrame:
    """Jaccard overlap |A ∩ B| / |A ∪ B| of every pair of kept sets."""
    names = list(kept_sets)
    sets = {name: set(rows) for name, rows in kept_sets.items()}
    return pd.DataFrame([[len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else math.nan
                          for b in names] for a in names], index=names, columns=names)


def agreement(kept_sets: dict[str, pd.Index], rows: pd.Index) -> pd.DataFrame:
    """Share of ``rows`` on which two kept sets make the same decision (both keep or both drop)."""
    names = list(kept_sets)
    decisions = {name: rows.isin(kept_sets[name]) for name in names}
    return pd.DataFrame([[float((decisions[a] == decisions[b]).mean()) if len(rows) else math.nan for b in names]
                         for a in names], index=names, columns=names)


def examples_around(table: pd.DataFrame, spec: str, cut: float, n: int = 4) -> dict[str, pd.DataFrame]:
    """Rows to look at when choosing a cut: ``n`` per score decile, and the ``n`` just above and below ``cut``."""
    column = score_column("cosine", spec)
    ok = table[table[score_column("status", spec)] == "ok"].sort_values(column, kind="stable")
    deciles = pd.qcut(ok[column].rank(method="first"), 10, labels=False) if len(ok) >= 10 else pd.Series(dtype=int)
    chosen = {f"decile {d + 1}": ok[deciles == d].iloc[::max(1, (deciles == d).sum() // n)].head(n)
              for d in range(10) if (deciles == d).any()}
    chosen["just below the cut"] = ok[ok[column] < cut].tail(n)
    chosen["just above the cut"] = ok[ok[column] >= cut].head(n)
    return chosen


@dataclass
class CurationStudy:
    """Notebook 08: what curation rules keep on a scored run, and how well they keep matched pairs.

    Attributes:
        rules: per checkpoint x rule (:data:`PRESET_FRACTIONS`): kept, precision, recall.
        pr: precision and recall of matched pairs against the kept fraction, per checkpoint.
        overlap, agreement: Jaccard overlap and same-decision share of the checkpoints' top-``fraction`` sets.
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
    challenge: RunCuration


def compute_curation_study(run_dir: str | Path, challenge_path: str, checkpoints: Sequence[str], fraction: float = 0.3,
                           embed: EmbedOptions = EmbedOptions()) -> CurationStudy:
    """Study curation on ``run_dir``'s scored pairs (they need a ``match`` column) and on the challenge set.

    Writes ``curation_rules.csv`` and ``curation_precision_recall.csv`` to ``run_dir``, and the
    challenge set's scored run and its curation under ``run_dir/curation/challenge``.
    """
    layout = RunLayout(run_dir)
    table = scored_table(layout)
    if "match" not in table:
        raise ValueError(f"{layout.results} has no match column: precision and recall need known pairs")
    specs = [spec for spec in checkpoints if score_column("cosine", spec) in table]
    rules, kept_sets, curves = [], {}, []
    for spec in specs:
        shares = dict(PRESET_FRACTIONS)
        if fraction not in shares.values():
            shares[f"top {fraction:.0%}"] = fraction
        for name, share in shares.items():
            kept = curate_table(table, [TopFraction(spec, share)]).kept
            rules.append({"checkpoint": spec, "rule": name, "fraction": share,
                          **rule_quality(table, kept, table["match"])})
        kept_sets[spec] = curate_table(table, [TopFraction(spec, fraction)]).kept
        curves.append(precision_recall_curve(table, spec, table["match"], np.round(np.arange(0.05, 1.0001, 0.05), 2)))
    first = table.loc[kept_sets[specs[0]], score_column("cosine", specs[0])]
    challenge = layout.challenge_run
    score_pairs_table(challenge.root, read_pairs(challenge_path), specs, ShardOptions(), embed, overwrite=True)
    curated = curate_run(challenge, [parse_rule("basic"), parse_rule(f"top:{fraction}[{specs[0]}]")],
                         CurationLayout(challenge.root / "curated"), progress=False)
    study = CurationStudy(table, kept_fraction_curve(table, np.round(np.linspace(-0.2, 1.0, 61), 3)),
                          pd.DataFrame(rules), pd.concat(curves, ignore_index=True), jaccard(kept_sets),
                          agreement(kept_sets, table.index), float(first.min()), curated)
    write_csv(layout.curation_rules, study.rules)
    write_csv(layout.curation_precision_recall, study.pr)
    return study
