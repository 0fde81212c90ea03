"""Curation rules and presets: what to keep of a scored run, the same at any scale (docs/curation.md).

Rules read a *wide* table, one row per pair with ``cosine[<spec>]``, ``status[<spec>]``... per checkpoint
(:func:`clipeval.layout.score_column`): the scored shards of a run are such tables. A top fraction or a
percentile needs the distribution of the scores it judges, so it *resolves* into a row-wise cut, exactly
(:meth:`TopFraction.resolve_exact`) or from a mergeable histogram past memory (:meth:`TopFraction.resolve_sketch`).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clipeval.curate.sketch import ScoreHistogram
from clipeval.layout import score_column

B32_SPECS = ("hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-32@openai")
L14_SPECS = ("hf:openai/clip-vit-large-patch14", "open_clip:ViT-L-14@openai")


class Rule:
    """A curation rule. A row-wise one keeps rows on their own values (:meth:`keep`)."""

    def checkpoints(self) -> list[str]:
        return []

    def describe(self) -> str:
        raise NotImplementedError

    def keep(self, table: pd.DataFrame, rows: pd.Index) -> pd.Index:
        """The rows of ``rows`` (row labels of ``table`` still kept) this rule keeps."""
        raise NotImplementedError

    def judged(self) -> tuple[str, str] | None:
        """The ``(score, checkpoint)`` the rule cuts, or None when it judges no one score (the basic filter)."""
        return None

    def cut_value(self) -> float | None:
        """The score a row must reach (a resolved cut), or None when the rule has no one cut."""
        return None


def _values(table: pd.DataFrame, rows: pd.Index, checkpoint: str, score: str) -> pd.Series:
    return table.loc[rows, score_column(score, checkpoint)]


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
        values = _values(table, rows, self.checkpoint, self.score)
        return rows[(values > self.value) if self.strict else (values >= self.value)]

    def judged(self):
        return self.score, self.checkpoint

    def cut_value(self):
        return self.value


@dataclass
class TopCut(Rule):
    """A resolved exact top fraction: the values above ``cut`` and the first ``ties`` rows equal to it.

    The tied rows are counted across the calls of one pass over the shards (:meth:`reset` starts one),
    so ties are broken by input order over the whole run.
    """

    source: Rule
    cut: float
    ties: int
    _left: int = 0

    def checkpoints(self):
        return self.source.checkpoints()

    def describe(self):
        return self.source.describe()

    def reset(self):
        self._left = self.ties

    def judged(self):
        return self.source.judged()

    def cut_value(self):
        return self.cut

    def keep(self, table, rows):
        values = _values(table, rows, self.source.checkpoint, self.source.score).to_numpy()
        tied = np.flatnonzero(values == self.cut)[:self._left]
        self._left -= len(tied)
        mask = values > self.cut
        mask[tied] = True
        return rows[mask]


@dataclass
class BinCut(Rule):
    """A resolved sketch cut: the rows whose value falls in bin ``first_bin`` of ``histogram`` or above."""

    source: Rule
    histogram: ScoreHistogram
    first_bin: int

    def checkpoints(self):
        return self.source.checkpoints()

    def describe(self):
        return self.source.describe()

    def keep(self, table, rows):
        values = _values(table, rows, self.source.checkpoint, self.source.score).to_numpy()
        return rows[self.histogram.bins(values) >= self.first_bin]

    def judged(self):
        return self.source.judged()

    def cut_value(self):
        return self.histogram.edge(self.first_bin)


class GlobalRule(Rule):
    """A rule that needs the distribution of the scores it judges; it resolves into a row-wise cut."""

    checkpoint: str
    score: str

    def checkpoints(self) -> list[str]:
        return [self.checkpoint]

    def judged(self):
        return self.score, self.checkpoint

    def resolve_exact(self, values: np.ndarray) -> tuple[Rule, str]:
        """The row-wise cut for the scores of every row it judges (in input order), and a note on it."""
        raise NotImplementedError

    def rank_from_top(self, total: int) -> int:
        """How many of ``total`` rows the cut keeps, counted from the highest score."""
        raise NotImplementedError

    def resolve_sketch(self, histogram: ScoreHistogram) -> tuple[Rule, str]:
        """The cut from a histogram of the scores: a bin edge, with its error bound in the note."""
        total = int(histogram.counts.sum())
        rank = self.rank_from_top(total)
        if rank <= 0 or total == 0:
            return BinCut(self, histogram, len(histogram.counts)), "sketch: nothing to keep"
        first = histogram.bin_of_rank_from_top(rank)
        return BinCut(self, histogram, first), (
            f"sketch cut {histogram.edge(first):.6f} (error bound: {histogram.width:.2g} in score, up to "
            f"{int(histogram.counts[first])} rows in the cut bin)")


@dataclass
class TopFraction(GlobalRule):
    """Keep exactly ⌈fraction·n⌉ of the ``n`` rows still kept, the highest by ``score`` (ties by input order)."""

    checkpoint: str
    fraction: float
    score: str = "cosine"

    def __post_init__(self):
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"a top fraction must be in (0, 1], got {self.fraction}")

    def describe(self) -> str:
        return f"top {self.fraction:.0%} by {self.score}[{self.checkpoint}]"

    def rank_from_top(self, total):
        return math.ceil(self.fraction * total)

    def resolve_exact(self, values):
        count = self.rank_from_top(len(values))
        if count == 0:
            return TopCut(self, math.inf, 0), "exact: nothing to keep"
        cut = float(-np.sort(-values, kind="stable")[count - 1])
        above, tied = int((values > cut).sum()), int((values == cut).sum())
        note = f"exact cut {cut:.6f}"
        if tied > count - above:
            note += f"; {tied - (count - above)} rows with the cut score dropped by input order"
        return TopCut(self, cut, count - above), note


@dataclass
class Percentile(GlobalRule):
    """Keep rows at or above ``checkpoint``'s own ``percentile``-th percentile of ``score`` (ties all kept)."""

    checkpoint: str
    percentile: float
    score: str = "cosine"

    def describe(self) -> str:
        return f"{self.score}[{self.checkpoint}] >= its {self.percentile:g}th percentile"

    def rank_from_top(self, total):
        return total - math.floor(self.percentile / 100 * (total - 1))

    def resolve_exact(self, values):
        cut = float(np.percentile(values, self.percentile)) if len(values) else math.inf
        return Threshold(self.checkpoint, cut, score=self.score), f"exact cut {cut:.6f}"


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
        kept = [set(rule.keep(table, rows)) for rule in self.rules]
        return pd.Index(sorted(self.combine(kept)), dtype=rows.dtype)

    def judged(self):
        """The one score every part cuts (``top:0.1[A] | cosine[A]>=0.3``), else None."""
        judged = {rule.judged() for rule in self.rules}
        return judged.pop() if len(judged) == 1 else None


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
        return rows[ok.fillna(False).to_numpy(dtype=bool)]


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


RULE_GRAMMAR = ("'cosine[SPEC]>=0.3' (or '>'; also clip_score_100, clip_score_2_5), 'top:0.3[SPEC]' or "
                "'top:30%[SPEC]', 'percentile:70[SPEC]', 'basic', 'preset:NAME[SPEC]' (NAME one of "
                f"{', '.join(PRESETS)}), or alternatives 'A | B'; without [SPEC] a rule cuts the run's primary "
                "(first) checkpoint")
RULE_SCORES = ("cosine", "clip_score_100", "clip_score_2_5")


def parse_rule(text: str, checkpoint: str | None = None) -> Rule:
    """A rule from its command-line form (:data:`RULE_GRAMMAR`); one without ``[SPEC]`` cuts ``checkpoint`` (the
    run's primary one, given by the caller).

    Raises:
        ValueError: a form not in the grammar, a value that is not a number, or no checkpoint; the
            message quotes the rule and shows the grammar.
    """
    if " | " in text:
        return AnyOf([parse_rule(part.strip(), checkpoint) for part in text.split(" | ")])
    text = text.strip()
    if text == "basic":
        return BasicFilter()
    head, spec, tail = _split_spec(text)
    spec = spec or checkpoint
    kind, colon, argument = head.partition(":")
    if colon and kind in ("top", "percentile", "preset") and not tail:
        if kind == "preset":
            rules = preset(argument, spec).rules
            return rules[0] if len(rules) == 1 else AllOf(rules)
        value = _number(text, argument, fraction=kind == "top")
        if kind == "top":
            if not 0.0 < value <= 1.0:
                raise ValueError(f"the rule {text!r} keeps a top fraction of {argument}: write one in (0, 1] or "
                                 f"(0%, 100%], e.g. 'top:0.3[SPEC]' or 'top:30%[SPEC]'")
            return TopFraction(_needs(spec, text), value)
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"the rule {text!r} names percentile {argument}: write one in [0, 100], "
                             "e.g. 'percentile:70[SPEC]'")
        return Percentile(_needs(spec, text), value)
    match = re.fullmatch(r"\s*(\w+)\s*(>=|>)\s*(\S+)\s*", head + tail)
    if match and match.group(1) in RULE_SCORES:
        score, operator, value = match.groups()
        return Threshold(_needs(spec, text), _number(text, value), strict=operator == ">", score=score)
    raise ValueError(f"cannot read the rule {text!r}; a rule is one of: {RULE_GRAMMAR}")


def _split_spec(text: str) -> tuple[str, str | None, str]:
    """``head[SPEC]tail`` as its three parts (``SPEC`` None without brackets; an empty one is None too)."""
    if "[" not in text:
        return text, None, ""
    if "]" not in text:
        raise ValueError(f"the rule {text!r} opens '[' and never closes it; a rule is one of: {RULE_GRAMMAR}")
    start, end = text.index("["), text.rindex("]")
    return text[:start], text[start + 1:end].strip() or None, text[end + 1:]


def _number(rule: str, raw: str, fraction: bool = False) -> float:
    """A rule's number: ``0.3``, or with a percent sign ``30%`` (0.3 for a fraction, 30 for a percentile)."""
    written = raw.strip()
    percent = written.endswith("%")
    try:
        value = float(written.removesuffix("%"))
    except ValueError:
        raise ValueError(f"the rule {rule!r} holds {raw!r} where a number goes; a rule is one of: "
                         f"{RULE_GRAMMAR}") from None
    return value / 100 if percent and fraction else value


def _needs(spec: str | None, rule: str) -> str:
    """The checkpoint a score rule cuts; none given and no primary known is an error saying how to name one."""
    if not spec:
        raise ValueError(f"the rule {rule!r} names no checkpoint and no run gives a primary one; name it in "
                         f"brackets, e.g. 'top:0.3[SPEC]' or 'cosine[SPEC]>=0.3'")
    return spec
