"""Curate image-caption pairs for text-to-image training with similarity scores: composable rules and presets.

A scored run (``results.csv`` + ``scores.csv``) is turned into a *wide* table, one row per input
pair with ``cosine[<spec>]`` and ``status[<spec>]`` per checkpoint, the caption and the image's
header size. Rules are applied in order; each step keeps some rows and drops the rest with a
reason, so kept + dropped is always every row:

* rows whose status is not ``ok`` under a checkpoint a rule uses are never kept: they are
  dropped first, counted by status (``status:<code>``);
* :class:`Threshold`: an absolute cut on a checkpoint's score (``>=`` or ``>``);
* :class:`TopFraction`: the top ⌈f·n⌉ rows by a checkpoint's score, over the rows still kept
  (ties at the cut broken by input order, and counted);
* :class:`Percentile`: rows at or above the checkpoint's own p-th percentile (ties all kept):
  the form of a threshold that transfers across model families;
* :class:`AnyOf` / :class:`AllOf`: several rules, e.g. the same rule on several checkpoints;
* :class:`BasicFilter`: DataComp's basic filter (caption of more than 2 words and more than 5
  characters, image short side at least 200 px, aspect ratio at most 3).

:data:`PRESETS` are the published rules with their sources; a threshold means something only
for the model it was set on, so applying one to another checkpoint warns and suggests the
percentile form.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

B32_SPECS = ("hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-32@openai")
L14_SPECS = ("hf:openai/clip-vit-large-patch14", "open_clip:ViT-L-14@openai")


def score_column(spec: str, score: str = "cosine") -> str:
    return f"{score}[{spec}]"


def wide_scores(run_dir: str | Path, caption_column: str = "caption", image_column: str = "image") -> pd.DataFrame:
    """One row per input pair (index ``row_id``): the image reference, the caption, ``match`` when the
    input has it, the image size, and per checkpoint ``cosine[<spec>]``, ``clip_score_100[<spec>]``,
    ``caption_truncated[<spec>]`` and ``status[<spec>]``."""
    run_dir = Path(run_dir)
    scores = pd.read_csv(run_dir / "scores.csv", keep_default_na=False, na_values=[""],
                         dtype={"checkpoint": str, "status": str, "error": str})
    results = pd.read_csv(run_dir / "results.csv", keep_default_na=False, na_values=[""], dtype=str)
    missing = [column for column in (image_column, caption_column) if column not in results]
    if missing:
        raise ValueError(f"{run_dir / 'results.csv'} has no column(s) {missing}; pass the run's column names")
    wide = pd.DataFrame({"image": results[image_column], "caption": results[caption_column].astype(str)},
                        index=pd.RangeIndex(len(results), name="row_id"))
    if "match" in results:
        wide["match"] = results["match"].str.lower().isin(("true", "1", "yes"))
    first = scores.drop_duplicates("row_id").set_index("row_id")
    wide["image_width"], wide["image_height"] = first["image_width"], first["image_height"]
    for spec, rows in scores.groupby("checkpoint", sort=False):
        rows = rows.set_index("row_id")
        for column in ("cosine", "clip_score_100", "caption_truncated", "status"):
            wide[score_column(spec, column)] = rows[column]
    return wide


class Rule:
    """A curation rule: ``apply(table, rows)`` keeps a subset of ``rows`` (row ids still kept)."""

    def checkpoints(self) -> list[str]:
        return []

    def describe(self) -> str:
        raise NotImplementedError

    def keep(self, table: pd.DataFrame, rows: pd.Index) -> tuple[pd.Index, str]:
        """The kept row ids (a subset of ``rows``) and a note (ties broken, ...)."""
        raise NotImplementedError


@dataclass
class Threshold(Rule):
    """Keep rows whose ``score`` under ``checkpoint`` is ``>= value`` (or ``> value`` with ``strict``)."""

    checkpoint: str
    value: float
    strict: bool = False
    score: str = "cosine"

    def checkpoints(self) -> list[str]:
        return [self.checkpoint]

    def describe(self) -> str:
        return f"{self.score}[{self.checkpoint}] {'>' if self.strict else '>='} {self.value:g}"

    def keep(self, table, rows):
        values = table.loc[rows, score_column(self.checkpoint, self.score)]
        return rows[(values > self.value) if self.strict else (values >= self.value)], ""


@dataclass
class TopFraction(Rule):
    """Keep exactly ⌈fraction·n⌉ of the ``n`` rows still kept, the highest by ``score`` (ties by input order)."""

    checkpoint: str
    fraction: float
    score: str = "cosine"

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"a top fraction must be in (0, 1], got {self.fraction}")

    def checkpoints(self) -> list[str]:
        return [self.checkpoint]

    def describe(self) -> str:
        return f"top {self.fraction:.0%} by {self.score}[{self.checkpoint}]"

    def keep(self, table, rows):
        count = math.ceil(self.fraction * len(rows))
        values = table.loc[rows, score_column(self.checkpoint, self.score)]
        order = values.sort_values(ascending=False, kind="stable")  # ties keep input order
        kept = order.index[:count]
        if count == 0 or count == len(order):
            return pd.Index(sorted(kept)), ""
        cut = order.iloc[count - 1]
        tied_out = int((order.iloc[count:] == cut).sum())
        note = (f"{tied_out} rows with the same score as the last kept one ({cut:.6f}) dropped by input order"
                if tied_out else "")
        return pd.Index(sorted(kept)), note


@dataclass
class Percentile(Rule):
    """Keep rows at or above ``checkpoint``'s own ``percentile``-th percentile of ``score`` (ties all kept)."""

    checkpoint: str
    percentile: float
    score: str = "cosine"

    def checkpoints(self) -> list[str]:
        return [self.checkpoint]

    def describe(self) -> str:
        return f"{self.score}[{self.checkpoint}] >= its {self.percentile:g}th percentile"

    def keep(self, table, rows):
        values = table.loc[rows, score_column(self.checkpoint, self.score)]
        cut = float(np.percentile(values, self.percentile)) if len(values) else math.inf
        return rows[values >= cut], f"cut {cut:.6f}"


@dataclass
class Combination(Rule):
    """Several rules judged on the same rows; subclasses say how their kept sets combine."""

    rules: list[Rule]
    word = ""

    def checkpoints(self) -> list[str]:
        return list(dict.fromkeys(spec for rule in self.rules for spec in rule.checkpoints()))

    def describe(self) -> str:
        return f" {self.word} ".join(f"({rule.describe()})" for rule in self.rules)

    def keep(self, table, rows):
        kept = [set(rule.keep(table, rows)[0]) for rule in self.rules]
        return pd.Index(sorted(self.combine(kept))), ""


@dataclass
class AnyOf(Combination):
    """Keep a row when any of ``rules`` keeps it."""

    word = "or"

    @staticmethod
    def combine(kept: list[set]) -> set:
        return set().union(*kept)


@dataclass
class AllOf(Combination):
    """Keep a row when every one of ``rules`` keeps it (each judged on the same rows)."""

    word = "and"

    @staticmethod
    def combine(kept: list[set]) -> set:
        return set.intersection(*kept) if kept else set()


@dataclass
class BasicFilter(Rule):
    """DataComp's basic filter: caption words > ``min_words`` and characters > ``min_chars``, image short
    side >= ``min_short_side`` and aspect ratio <= ``max_aspect`` (image sizes from the header, recorded
    during scoring; a row without a size fails the image part)."""

    min_words: int = 2
    min_chars: int = 5
    min_short_side: int = 200
    max_aspect: float = 3.0

    def describe(self) -> str:
        return (f"basic filter: caption > {self.min_words} words and > {self.min_chars} characters, image short "
                f"side >= {self.min_short_side} px, aspect ratio <= {self.max_aspect:g}")

    def keep(self, table, rows):
        rows_table = table.loc[rows]
        caption = rows_table["caption"].str.strip()
        width, height = rows_table["image_width"].astype(float), rows_table["image_height"].astype(float)
        short, long = np.minimum(width, height), np.maximum(width, height)
        ok = ((caption.str.split().str.len() > self.min_words) & (caption.str.len() > self.min_chars)
              & (short >= self.min_short_side) & (long / short <= self.max_aspect))
        return rows[ok.fillna(False).to_numpy(dtype=bool)], ""


@dataclass
class Preset:
    """A published rule with its source and the checkpoints its numbers were set on."""

    rules: list[Rule]
    source: str
    set_on: tuple[str, ...] = ()
    percentile_hint: str = ""


def preset(name: str, checkpoint: str | None = None) -> Preset:
    """A named preset applied to ``checkpoint`` (warns when the preset's numbers were set on another model).

    Raises:
        ValueError: an unknown name, or a score preset without a checkpoint.
    """
    if name == "datacomp-basic":
        return Preset([BasicFilter()], "DataComp (Gadre et al. 2023), the basic filtering baseline")
    if name not in ("laion400m", "laion2b", "datacomp-l14-30pct"):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    if checkpoint is None:
        raise ValueError(f"the preset {name} needs the checkpoint whose scores it cuts")
    made = {
        "laion400m": lambda: Preset([Threshold(checkpoint, 0.30)], "LAION-400M (Schuhmann et al. 2021): OpenAI "
                                    "CLIP ViT-B/32 cosine >= 0.30", B32_SPECS,
                                    f"top:0.2[{checkpoint}] (B/32 >= 0.30 kept about 20% of DataComp's CommonPool, "
                                    "Table 16)"),
        "laion2b": lambda: Preset([Threshold(checkpoint, 0.28, strict=True)], "LAION-5B (Schuhmann et al. 2022), "
                                  "its English 2B subset: OpenAI CLIP ViT-B/32 cosine > 0.28", B32_SPECS,
                                  f"top:0.3[{checkpoint}] (B/32 >= 0.281 kept about 30% of CommonPool, Table 16)"),
        "datacomp-l14-30pct": lambda: Preset([TopFraction(checkpoint, 0.30)], "DataComp (Gadre et al. 2023): the "
                                             "top 30% by OpenAI CLIP ViT-L/14 cosine (L/14 >= 0.243 on CommonPool, "
                                             "Table 16)", L14_SPECS),
    }[name]()
    if made.set_on and checkpoint not in made.set_on:
        hint = f"; use the percentile form instead, e.g. {made.percentile_hint}" if made.percentile_hint else ""
        warnings.warn(f"preset {name} was set on {' / '.join(made.set_on)}, not on {checkpoint}: its threshold means "
                      f"something only for that model{hint}", stacklevel=2)
    return made


PRESETS = ("laion400m", "laion2b", "datacomp-l14-30pct", "datacomp-basic")


@dataclass
class Curation:
    """The outcome of :func:`curate`.

    Attributes:
        kept: row ids kept, in input order.
        dropped: one row per dropped input row: ``row_id``, ``step`` (1-based rule number, 0
            for the status check), ``reason``.
        steps: one row per step: ``step``, ``rule``, ``rows_in``, ``kept``, ``dropped``, ``note``.
    """

    kept: pd.Index
    dropped: pd.DataFrame
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)


def curate(table: pd.DataFrame, rules: list[Rule]) -> Curation:
    """Apply ``rules`` in order to a :func:`wide_scores` table; kept + dropped = every row."""
    checkpoints = list(dict.fromkeys(spec for rule in rules for spec in rule.checkpoints()))
    rows = table.index
    dropped, steps = [], []
    for spec in checkpoints:
        column = score_column(spec, "status")
        if column not in table:
            raise ValueError(f"the run has no scores for {spec}; it has {checkpoints_of(table)}")
        bad = table.loc[rows, column].ne("ok")
        dropped += [{"row_id": row, "step": 0, "reason": f"status:{status}"}
                    for row, status in table.loc[rows[bad], column].items()]
        rows = rows[~bad.to_numpy()]
    steps.append({"step": 0, "rule": "status ok under " + ", ".join(checkpoints) if checkpoints else "-",
                  "rows_in": len(table), "kept": len(rows), "dropped": len(table) - len(rows), "note": ""})
    for number, rule in enumerate(rules, start=1):
        kept, note = rule.keep(table, rows)
        lost = rows.difference(kept)
        dropped += [{"row_id": row, "step": number, "reason": rule.describe()} for row in lost]
        steps.append({"step": number, "rule": rule.describe(), "rows_in": len(rows), "kept": len(kept),
                      "dropped": len(lost), "note": note})
        rows = kept
    dropped_table = pd.DataFrame(dropped, columns=["row_id", "step", "reason"]).sort_values("row_id",
                                                                                         ignore_index=True)
    return Curation(rows, dropped_table, pd.DataFrame(steps))


def parse_rule(text: str) -> Rule:
    """A rule from its command-line form.

    ``cosine[SPEC]>=0.3`` (or ``>``), ``top:0.3[SPEC]``, ``percentile:70[SPEC]``, ``basic``,
    ``preset:NAME[SPEC]`` (``preset:datacomp-basic``), and alternatives joined by `` | `` (kept
    when any keeps the row).

    Raises:
        ValueError: a form not in this list.
    """
    if " | " in text:
        return AnyOf([parse_rule(part.strip()) for part in text.split(" | ")])
    text = text.strip()
    spec = text[text.index("[") + 1:text.rindex("]")] if "[" in text and "]" in text else None
    if text == "basic":
        return BasicFilter()
    if text.startswith("preset:"):
        name = text[len("preset:"):].split("[")[0]
        rules = preset(name, spec).rules
        return rules[0] if len(rules) == 1 else AllOf(rules)
    if text.startswith("top:") and spec:
        return TopFraction(spec, float(text[4:text.index("[")]))
    if text.startswith("percentile:") and spec:
        return Percentile(spec, float(text[len("percentile:"):text.index("[")]))
    for operator in (">=", ">"):
        head, sep, value = text.rpartition(operator)
        if sep and spec and head.endswith("]"):
            score = head[:head.index("[")]
            return Threshold(spec, float(value), strict=operator == ">", score=score)
    raise ValueError(f"cannot read the rule {text!r}; write e.g. 'cosine[SPEC]>=0.3', 'top:0.3[SPEC]', "
                     f"'percentile:70[SPEC]', 'basic', 'preset:laion400m[SPEC]' or 'A | B'")


# --- what a rule does: the studies of notebook 08 -------------------------------------------------------------

PRESET_FRACTIONS = {"laion400m": 0.20, "laion2b": 0.30, "datacomp-l14-30pct": 0.30}
"""Each score preset as the share of DataComp's CommonPool it kept (Table 16), to carry it to any checkpoint."""


def checkpoints_of(table: pd.DataFrame) -> list[str]:
    """The checkpoints a :func:`wide_scores` table holds scores for."""
    return [column[len("status["):-1] for column in table.columns if column.startswith("status[")]


def kept_fraction_curve(table: pd.DataFrame, thresholds) -> pd.DataFrame:
    """Per checkpoint and threshold: the share of ok rows with cosine >= threshold."""
    rows = []
    for spec in checkpoints_of(table):
        values = table.loc[table[score_column(spec, "status")] == "ok", score_column(spec)]
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
                          **rule_quality(table, curate(table, [TopFraction(spec, f)]).kept, match)}
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
    column = score_column(spec)
    ok = table[table[score_column(spec, "status")] == "ok"].sort_values(column, kind="stable")
    deciles = pd.qcut(ok[column].rank(method="first"), 10, labels=False) if len(ok) >= 10 else pd.Series(dtype=int)
    chosen = {f"decile {d + 1}": ok[deciles == d].iloc[::max(1, (deciles == d).sum() // n)].head(n)
              for d in range(10) if (deciles == d).any()}
    chosen["just below the cut"] = ok[ok[column] < cut].tail(n)
    chosen["just above the cut"] = ok[ok[column] >= cut].head(n)
    return chosen
