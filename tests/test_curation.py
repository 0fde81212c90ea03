"""Curation rules on known arrays: ties, failed rows, exact top fractions, presets and their sources."""

import math

import numpy as np
import pandas as pd
import pytest

from clipeval.curate.engine import curate_table as curate
from clipeval.curate.rules import (
    AllOf,
    AnyOf,
    BasicFilter,
    Percentile,
    Threshold,
    TopFraction,
    parse_rule,
    preset,
)
from clipeval.embed.options import EmbedOptions
from clipeval.layout import RunLayout

A, B = "hf:openai/clip-vit-base-patch32", "dual:x"
CPU = EmbedOptions(device="cpu", progress=False)


def table(cosines_a, cosines_b=None, statuses=None, captions=None, sizes=None) -> pd.DataFrame:
    n = len(cosines_a)
    frame = pd.DataFrame({"caption": captions or ["a cat on a mat"] * n,
                          "image_width": [s[0] for s in sizes] if sizes else [640] * n,
                          "image_height": [s[1] for s in sizes] if sizes else [480] * n},
                         index=pd.RangeIndex(n, name="row_id"))
    for spec, values in ((A, cosines_a), (B, cosines_b if cosines_b is not None else cosines_a)):
        frame[f"cosine[{spec}]"] = values
        frame[f"status[{spec}]"] = statuses or ["ok"] * n
    return frame


def test_threshold_keeps_ties_at_the_cut_and_never_failed_rows():
    scores = table([0.30, 0.2999, 0.31, np.nan, 0.35], statuses=["ok", "ok", "ok", "decode_error", "ok"])
    result = curate(scores, [Threshold(A, 0.30)])
    assert result.kept.tolist() == [0, 2, 4]  # 0.30 itself is kept with >=
    assert dict(zip(result.dropped["row_id"], result.dropped["reason"])) == {
        1: f"cosine[{A}] >= 0.3", 3: "status:decode_error"}
    assert curate(scores, [Threshold(A, 0.30, strict=True)]).kept.tolist() == [2, 4]
    assert result.steps[["rows_in", "kept", "dropped"]].values.tolist() == [[5, 4, 1], [4, 3, 1]]


def test_top_fraction_keeps_exactly_the_ceiling_and_says_how_ties_were_broken():
    scores = table([0.1, 0.5, 0.5, 0.5, 0.2, 0.9, 0.3])
    result = curate(scores, [TopFraction(A, 0.5)])  # ceil(3.5) = 4 of 7
    assert len(result.kept) == math.ceil(0.5 * 7) == 4
    assert result.kept.tolist() == [1, 2, 3, 5]
    tied = curate(scores, [TopFraction(A, 0.3)])  # 3 of 7: 0.9 and two of the three 0.5s, by input order
    assert tied.kept.tolist() == [1, 2, 5]
    assert "1 rows with the cut score dropped by input order" in tied.steps["note"].iloc[1]
    with pytest.raises(ValueError, match="top fraction"):
        TopFraction(A, 0.0)


def test_percentile_transfers_across_scales_and_combinations_of_checkpoints():
    a, b = np.linspace(0.1, 0.4, 10), np.linspace(0.5, 0.9, 10)[::-1]  # different scales, opposite orders
    scores = table(a, b)
    assert curate(scores, [Percentile(A, 70)]).kept.tolist() == curate(scores, [TopFraction(A, 0.3)]).kept.tolist()
    assert curate(scores, [AnyOf([Percentile(A, 80), Percentile(B, 80)])]).kept.tolist() == [0, 1, 8, 9]
    assert curate(scores, [AllOf([Percentile(A, 50), Percentile(B, 50)])]).kept.tolist() == []


def test_basic_filter_checks_words_characters_short_side_and_aspect():
    captions = ["a cat on a mat", "two words", "a b c", "a cat on a mat", "a cat on a mat", "a cat on a mat"]
    sizes = [(640, 480), (640, 480), (640, 480), (199, 400), (900, 300), (901, 300)]
    scores = table([0.3] * 6, captions=captions, sizes=sizes)
    assert curate(scores, [BasicFilter()]).kept.tolist() == [0, 4]  # 3 words > 2 but 5 characters is not > 5


def test_kept_and_dropped_cover_every_row_in_order():
    rng = np.random.default_rng(0)
    scores = table(rng.uniform(0, 0.5, 200), statuses=rng.choice(["ok", "missing"], 200, p=[0.9, 0.1]).tolist())
    result = curate(scores, [Threshold(A, 0.1), TopFraction(B, 0.5), BasicFilter()])
    assert sorted([*result.kept, *result.dropped["row_id"]]) == list(range(200))
    assert result.dropped["row_id"].is_unique and list(result.kept) == sorted(result.kept)
    assert result.steps["kept"].iloc[-1] == len(result.kept)


def test_presets_match_their_published_numbers_and_warn_off_their_model():
    laion = preset("laion400m", A).rules[0]
    assert (laion.value, laion.strict) == (0.30, False)
    laion2b = preset("laion2b", A).rules[0]
    assert (laion2b.value, laion2b.strict) == (0.28, True)
    assert preset("datacomp-l14-30pct", "hf:openai/clip-vit-large-patch14").rules[0].fraction == 0.30
    basic = preset("datacomp-basic").rules[0]
    assert (basic.min_words, basic.min_chars, basic.min_short_side, basic.max_aspect) == (2, 5, 200, 3.0)
    with pytest.warns(UserWarning, match=r"set on .*percentile form.*top:0.2\[dual:x\]"):
        preset("laion400m", B)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("laion9000", A)


def test_rules_parse_from_their_command_line_form():
    assert parse_rule(f"cosine[{A}]>=0.3") == Threshold(A, 0.3)
    assert parse_rule(f"cosine[{A}]>0.28") == Threshold(A, 0.28, strict=True)
    assert parse_rule(f"top:0.3[{B}]") == TopFraction(B, 0.3)
    assert parse_rule(f"percentile:70[{B}]") == Percentile(B, 70)
    assert parse_rule("basic") == BasicFilter()
    assert parse_rule(f"top:0.1[{A}] | top:0.1[{B}]") == AnyOf([TopFraction(A, 0.1), TopFraction(B, 0.1)])
    with pytest.raises(ValueError, match=r"cannot read the rule 'cosine<0.3'; a rule is one of: 'cosine"):
        parse_rule("cosine<0.3", A)
    with pytest.raises(ValueError, match=r"names no checkpoint .* e.g. 'top:0.3\[SPEC\]'"):
        parse_rule("cosine>=0.3")


def test_a_top_fraction_reads_as_a_percentage_and_bad_numbers_show_the_grammar():
    assert parse_rule(f"top:30%[{A}]") == TopFraction(A, 0.3)
    assert parse_rule(f"percentile:70%[{B}]") == Percentile(B, 70)
    with pytest.raises(ValueError, match=r"holds '30 pct' where a number goes; a rule is one of: .*'top:30%\[SPEC\]'"):
        parse_rule(f"top:30 pct[{A}]")
    with pytest.raises(ValueError, match=r"top fraction of 130%: write one in \(0, 1\] or \(0%, 100%\]"):
        parse_rule(f"top:130%[{A}]")


def test_a_rule_without_a_checkpoint_cuts_the_primary_one():
    assert parse_rule("top:0.3", A) == TopFraction(A, 0.3)
    assert parse_rule("cosine>=0.3", B) == Threshold(B, 0.3)
    assert parse_rule(f"top:0.1 | top:0.1[{B}]", A) == AnyOf([TopFraction(A, 0.1), TopFraction(B, 0.1)])
    assert parse_rule(f"top:0.3[{B}]", A) == TopFraction(B, 0.3)  # a named checkpoint wins


def test_dropped_rows_carry_their_score_and_the_cut():
    scores = table([0.1, 0.5, 0.4, np.nan, 0.2], statuses=["ok", "ok", "ok", "missing", "ok"])
    dropped = curate(scores, [Threshold(A, 0.15), TopFraction(A, 0.5)]).dropped.set_index("row_id")
    assert dropped.loc[0, ["step", "score", "cut"]].tolist() == [1, 0.1, 0.15]
    assert dropped.loc[4, ["step", "score", "cut"]].tolist() == [2, 0.2, 0.4]  # top 2 of 3: cut at 0.4
    assert dropped.loc[3, "step"] == 0 and np.isnan(dropped.loc[3, "score"]) and np.isnan(dropped.loc[3, "cut"])
    basic = curate(table([0.3], captions=["two words"]), [BasicFilter()]).dropped
    assert basic["score"].isna().all() and basic["cut"].isna().all()  # no one score: left empty


def test_the_summary_says_a_later_global_rule_is_over_the_rows_kept_before_it():
    scores = table(np.linspace(0, 1, 10))
    steps = curate(scores, [Threshold(A, 0.5), TopFraction(A, 0.5)]).steps
    assert "rules apply in the order given" in steps["note"].iloc[2] and "exact cut" in steps["note"].iloc[2]
    first = curate(scores, [TopFraction(A, 0.5), Threshold(A, 0.5)]).steps
    assert "rules apply in the order given" not in "".join(first["note"])


def test_curate_reads_a_scored_run_and_writes_every_output(tiny_specs, challenge_csv, tmp_path):
    from clipeval.data.sources import read_pairs
    from clipeval.jobs.steps import curate as curate_step
    from clipeval.jobs.steps import score

    pairs = read_pairs(challenge_csv)
    score(tmp_path / "run", str(challenge_csv), [tiny_specs["hf-clip"]], embed=CPU)
    [shard] = RunLayout(tmp_path / "run").scored_shards()
    wide = pd.read_parquet(shard)
    assert len(wide) == len(pairs) and f"cosine[{tiny_specs['hf-clip']}]" in wide
    result = curate_step(tmp_path / "run", [f"top:0.5[{tiny_specs['hf-clip']}]"], tmp_path / "curated")
    curated = pd.read_csv(tmp_path / "curated" / "curated.csv")
    assert list(curated.columns) == ["row_id", *pairs.columns]
    kept = pd.read_csv(tmp_path / "curated" / "kept.csv")["row_id"]
    assert curated["row_id"].tolist() == sorted(curated["row_id"]) == kept.tolist()
    assert result.kept == len(kept) == math.ceil(0.5 * len(pairs))
    dropped = pd.read_csv(tmp_path / "curated" / "dropped.csv")
    assert len(curated) + len(dropped) == len(pairs)
    assert list(dropped.columns) == ["row_id", "step", "reason", "score", "cut"]
    cut = dropped.loc[dropped["step"] == 1, "cut"]
    assert cut.nunique() == 1 and (dropped.loc[dropped["step"] == 1, "score"] <= cut).all()
    assert (tmp_path / "curated" / "summary.csv").is_file() and (tmp_path / "curated" / "kept.csv").is_file()


def test_the_curate_command_prints_the_steps_and_refuses_unknown_checkpoints(tiny_specs, challenge_csv, tmp_path,
                                                                             capsys):
    from clipeval.jobs.steps import score
    from clipeval.runs.cli import main

    spec = tiny_specs["hf-clip"]
    score(tmp_path / "run", str(challenge_csv), [spec], embed=CPU)
    assert main(["curate", "--scores", str(tmp_path / "run"), "--rule", f"cosine[{spec}]>=-1", "--rule", "basic",
                 "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "basic filter" in printed and printed.strip().splitlines()[-1].startswith("kept ")
    assert "note: rules apply in the order given" in printed
    # no [SPEC]: the run's primary checkpoint; a percentage reads as a fraction
    assert main(["curate", "--scores", str(tmp_path / "run"), "--rule", "top:30%", "--out",
                 str(tmp_path / "primary"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"top 30% by cosine[{spec}]" in printed and "rules apply in the order given" not in printed
    assert "note: step 1: exact cut" in printed
    assert main(["curate", "--scores", str(tmp_path / "run"), "--rule", f"cosine[{spec}]>=-1", "--rule", "top:30%",
                 "--out", str(tmp_path / "two"), "--no-progress"]) == 0
    printed = capsys.readouterr().out  # the order said once; the step's own note keeps its cut
    assert printed.count("rules apply in the order given") == 1 and "note: step 2: exact cut" in printed
    assert main(["curate", "--scores", str(tmp_path / "run"), "--rule", "top:0.5[hf:other]", "--out",
                 str(tmp_path / "x")]) == 2
    assert "no scores for hf:other" in capsys.readouterr().err


def test_agreement_counts_both_keep_and_both_drop():
    from clipeval.studies.curation import agreement, jaccard

    rows = pd.RangeIndex(10)
    kept = {"a": pd.Index([0, 1, 2, 3]), "b": pd.Index([2, 3, 4, 5])}
    assert jaccard(kept).loc["a", "b"] == pytest.approx(2 / 6)
    assert agreement(kept, rows).loc["a", "b"] == pytest.approx(6 / 10)  # 2 both kept + 4 both dropped
