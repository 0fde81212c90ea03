"""Published numbers as data (the catalogue) and the measured-vs-published deviation check."""

import re

import numpy as np
import pandas as pd
import pytest

from clipeval.data.benchmarks import BENCHMARKS, COCO_5K, FLICKR_1K
from clipeval.metrics.published import (
    DEFAULT_TOLERANCE,
    HINT_ABOVE,
    HINT_BELOW,
    compare_with_published,
    deviates,
    nothing_to_compare,
)
from clipeval.models.catalogue import CATALOGUE, PUBLISHED_KS, published_retrieval
from clipeval.plots.retrieval import FLAG_STYLE, published_side_by_side, style_published
from clipeval.profiles import load_profile

B32 = "open_clip:ViT-B-32@openai"


# --- the catalogue's published numbers ----------------------------------------------------------------

def test_every_published_number_is_well_formed():
    table = published_retrieval()
    assert len(table) > 0
    assert table["source"].str.len().gt(0).all()  # every number names its source
    assert table["published"].between(0, 100).all()
    assert set(table["dataset"]) <= set(BENCHMARKS) and set(table["direction"]) <= {"text_to_image", "image_to_text"}
    assert set(table["k"]) == set(PUBLISHED_KS)
    for spec, info in CATALOGUE.items():
        seen = set()
        for entry in info.published:
            assert entry.source and entry.benchmark in BENCHMARKS, spec
            assert len(entry.hit_rate) == len(PUBLISHED_KS), spec
            r1, r5, r10 = entry.hit_rate
            assert 0 <= r1 <= r5 <= r10 <= 100, (spec, entry)
            assert (entry.benchmark, entry.direction) not in seen, spec  # one entry per benchmark x direction
            seen.add((entry.benchmark, entry.direction))


def test_known_published_values_from_open_clips_table():
    table = published_retrieval().set_index(["checkpoint", "dataset", "direction", "k"])["published"]

    def values(spec, dataset, direction):
        return [round(table[(spec, dataset, direction, k)], 1) for k in PUBLISHED_KS]

    assert values(B32, COCO_5K, "text_to_image") == [30.4, 55.9, 66.9]
    assert values(B32, FLICKR_1K, "text_to_image") == [58.8, 83.6, 90.0]
    assert values("open_clip:ViT-B-16-SigLIP@webli", COCO_5K, "text_to_image") == [47.8, 72.4, 81.0]


def test_the_transformers_and_open_clip_b32_share_their_published_numbers():
    table = published_retrieval(["hf:openai/clip-vit-base-patch32", B32])
    hf, oc = (table[table["checkpoint"] == spec].drop(columns=["checkpoint", "source"]).reset_index(drop=True)
              for spec in ("hf:openai/clip-vit-base-patch32", B32))
    pd.testing.assert_frame_equal(hf, oc)
    assert "same OpenAI weights" in table[table["checkpoint"].str.startswith("hf:")]["source"].iloc[0]


def test_paper_checkpoints_have_published_numbers_except_the_baseline():
    for spec in load_profile("paper")["checkpoints"]:
        mine = published_retrieval([spec])
        if spec.startswith("baseline:"):
            assert mine.empty, spec  # nothing published: none recorded
        else:
            assert len(mine) == 2 * 2 * 3, spec  # both benchmarks, both directions, k = 1, 5, 10


def test_offline_checkpoints_have_none():
    assert published_retrieval(load_profile("offline")["checkpoints"]).empty


# --- the deviation check ----------------------------------------------------------------------------

def _metrics(measured: float, low: float, high: float, k: int = 1, direction: str = "text_to_image",
             spec: str = B32, dataset: str = COCO_5K) -> pd.DataFrame:
    """A fake metrics.csv row (fractions, as evaluate_retrieval writes them)."""
    return pd.DataFrame([{"checkpoint": spec, "dataset": dataset, "direction": direction, "k": k,
                          "hit_rate": measured / 100, "hit_rate_ci_low": low / 100, "hit_rate_ci_high": high / 100,
                          "recall": measured / 100, "mrr": 0.4, "n_queries": 25000}])


PUBLISHED = pd.DataFrame([{"checkpoint": B32, "dataset": COCO_5K, "direction": "text_to_image", "k": 1,
                           "published": 30.44, "source": "open_clip table"}])


def test_a_result_within_tolerance_is_not_flagged():
    row = compare_with_published(_metrics(30.1, 29.5, 30.7), PUBLISHED).iloc[0]
    assert not row["flagged"] and row["status"] == "within tolerance" and row["hint"] == ""
    assert row["measured"] == pytest.approx(30.1) and row["published"] == 30.44
    assert row["difference"] == pytest.approx(-0.34) and row["source"] == "open_clip table"


def test_a_result_beyond_tolerance_is_flagged_with_the_usual_causes():
    below = compare_with_published(_metrics(15.0, 14.5, 15.5), PUBLISHED).iloc[0]  # e.g. wrong preprocessing
    assert below["flagged"] and below["status"] == "DEVIATES" and below["hint"] == HINT_BELOW
    assert "preprocessing" in below["hint"] and "padding" in below["hint"] and "precision" in below["hint"]
    above = compare_with_published(_metrics(45.0, 44.0, 46.0), PUBLISHED).iloc[0]  # e.g. a smaller split
    assert above["flagged"] and above["hint"] == HINT_ABOVE and "split" in above["hint"]


def test_the_rule_needs_both_the_gap_and_the_published_value_outside_the_widened_ci():
    # 4.4 points off but a wide CI (few queries): the published value is inside [lo - t, hi + t]
    assert not compare_with_published(_metrics(26.0, 22.0, 30.0), PUBLISHED).iloc[0]["flagged"]
    # just beyond: |m - p| = 2.54 > 2 and p = 30.44 > hi + t = 28.4
    assert compare_with_published(_metrics(27.9, 27.3, 28.4 - 1e-9), PUBLISHED).iloc[0]["flagged"]
    # the same gap with a larger tolerance passes
    assert not compare_with_published(_metrics(27.9, 27.3, 28.4), PUBLISHED, tolerance=3.0).iloc[0]["flagged"]
    # no CI: the gap alone decides
    assert deviates([25.0], [np.nan], [np.nan], [30.44], DEFAULT_TOLERANCE).tolist() == [True]
    assert deviates([29.0], [np.nan], [np.nan], [30.44], DEFAULT_TOLERANCE).tolist() == [False]


def test_rows_without_a_published_number_are_kept_and_never_flagged():
    metrics = pd.concat([_metrics(30.0, 29.5, 30.5), _metrics(50.0, 49.0, 51.0, k=5),
                         _metrics(1.0, 0.5, 1.5, spec="baseline:bert-resnet50")], ignore_index=True)
    table = compare_with_published(metrics, PUBLISHED)
    assert table["status"].tolist() == ["within tolerance", "no published number", "no published number"]
    assert not table["flagged"].iloc[1:].any() and table["published"].iloc[1:].isna().all()


def test_the_comparison_against_the_catalogue_covers_every_k():
    metrics = pd.concat([_metrics(v, v - 0.5, v + 0.5, k=k) for k, v in zip((1, 5, 10), (30.0, 56.0, 40.0))],
                        ignore_index=True)
    table = compare_with_published(metrics, published_retrieval([B32]))
    assert table["published"].round(1).tolist() == [30.4, 55.9, 66.9]
    assert table["flagged"].tolist() == [False, False, True]


def test_bad_input_to_the_check():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['hit_rate_ci_low', 'hit_rate_ci_high'\]"):
        compare_with_published(_metrics(30, 29, 31).drop(columns=["hit_rate_ci_low", "hit_rate_ci_high"]), PUBLISHED)
    with pytest.raises(ValueError, match="tolerance"):
        compare_with_published(_metrics(30, 29, 31), PUBLISHED, tolerance=-1)


def test_nothing_to_compare_says_why():
    published = published_retrieval()
    offline = nothing_to_compare(["dual:outputs/offline/models/dual"], [], published)
    assert "names no standard benchmark" in offline and "no published retrieval numbers" in offline
    tiny = nothing_to_compare(["hf:data/checkpoints/tiny-random/hf-clip"], [COCO_5K], published)
    assert "no checkpoint of this run" in tiny
    assert nothing_to_compare([B32], [COCO_5K], published) is None


# --- the notebook's table ------------------------------------------------------------------------------

def test_side_by_side_table_names_the_split_and_colours_deviations_red():
    metrics = pd.concat([_metrics(30.0, 29.5, 30.5, k=1), _metrics(40.0, 39.0, 41.0, k=5),
                         _metrics(67.0, 66.0, 68.0, k=10), _metrics(50.0, 49.0, 51.0, k=1, direction="image_to_text"),
                         _metrics(75.0, 74.0, 76.0, k=5, direction="image_to_text"),
                         _metrics(83.0, 82.0, 84.0, k=10, direction="image_to_text")], ignore_index=True)
    comparison = compare_with_published(metrics, published_retrieval([B32]))
    side = published_side_by_side(comparison)
    assert side.index.get_level_values("benchmark")[0] == "COCO 2014 5k test (Karpathy split, 5 captions per image)"
    assert side["status"].tolist() == ["DEVIATES at R@5", "ok"]
    assert side.loc[side.index[0], "R@5 published"] == pytest.approx(55.94)
    html = style_published(comparison).to_html()
    # the CSS rule carrying the flag style lists the cells it colours: #T_<id>_row<r>_col<c>
    rule = next(block for block in html.split("}") if FLAG_STYLE.split(";")[0] in block)
    red = sorted((side.columns[int(col)], int(row)) for row, col in re.findall(r"_row(\d+)_col(\d+)", rule))
    assert red == [("R@5 measured", 0), ("R@5 published", 0), ("status", 0)]
    assert "R@5 flagged" not in html and "Karpathy split, 5 captions per image" in html
    assert style_published(comparison.iloc[:0]).data.empty


def test_cli_lists_published_numbers_with_their_source(capsys):
    from clipeval.runs.cli import main

    assert main(["checkpoints", B32, "baseline:bert-resnet50"]) == 0
    printed = capsys.readouterr().out
    assert "published    coco-5k text_to_image R@1/5/10 30.4 / 55.9 / 66.9" in printed
    assert "published by open_clip docs/openclip_retrieval_results.csv" in printed
    assert printed.count("published    ") == 4  # the baseline has none
