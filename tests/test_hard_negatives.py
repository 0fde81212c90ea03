"""Hard-negative accuracy: SugarCrepe's reader, agreement with its main_eval.py logic item by item, per-row statuses,
a brute-force reference for the pairing rules, and the scenes' hard negatives read the same way."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.options import PairsTableError
from clipeval.data.scenes import generate_scenes
from clipeval.data.sugarcrepe import SUGARCREPE_CATEGORIES, read_sugarcrepe
from clipeval.embed.options import EmbedOptions
from clipeval.eval.hard_negatives import (
    CHANCE,
    negative_accuracy_table,
    negative_outcomes,
    score_hard_negative_pairs,
)
from clipeval.eval.scenes_benchmark import hard_negative_accuracy, hard_negative_outcomes, score_scene_pairs
from clipeval.models.registry import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPTIONS = EmbedOptions(device="cpu", progress=False)
WORDS = ["dog", "cat", "red", "blue", "table", "horse", "under", "near", "two", "green", "car", "tree"]


def _sugarcrepe(root, n_images=8, items_per_file=5, seed=0, growing=False):
    """A SugarCrepe-shaped folder: ``data/<category>.json`` (7 files), ``val2017/`` JPEGs, captions of random words."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True)
    (root / "val2017").mkdir()
    names = [f"{index:012d}.jpg" for index in range(n_images)]
    for name in names:
        pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 50, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "val2017" / name, quality=95)
    data = {}
    for number, stem in enumerate(SUGARCREPE_CATEGORIES):  # growing: of different sizes, as SugarCrepe's are
        data[stem] = {str(3 * item + 1): {"filename": names[rng.integers(n_images)],
                                          "caption": " ".join(rng.choice(WORDS, 5)),
                                          "negative_caption": " ".join(rng.choice(WORDS, 5))}
                      for item in range(items_per_file + (number if growing else 0))}
        (root / "data" / f"{stem}.json").write_text(json.dumps(data[stem], indent=4))
    return data


def sugarcrepe_main_eval(image_root, dataset, encoder):
    """SugarCrepe's ``main_eval.py`` (RAIVNLab/sugar-crepe) ``evaluate`` and ``text_retrieval``, re-implemented on the
    encoder interface: per item, the image (``transform(Image.open(...))``), the caption and the negative caption
    each encoded and normalised; correct when ``pos_score > neg_score``; a category's accuracy is its mean.

    Returns:
        ``(metrics by category file stem, {(stem, item id): 0 or 1})``.
    """
    metrics, items = {}, {}
    with torch.no_grad():
        for c, data_dict in dataset.items():
            correct_cnt = 0
            for i, data in data_dict.items():
                image = Image.open(os.path.join(image_root, data["filename"]))
                pos_text_embedding = encoder.encode_texts([data["caption"]])
                neg_text_embedding = encoder.encode_texts([data["negative_caption"]])
                image_embedding = encoder.encode_images(encoder.preprocess(image).unsqueeze(dim=0))
                pos_score = pos_text_embedding @ image_embedding.t()
                neg_score = neg_text_embedding @ image_embedding.t()
                correct = 1 if pos_score.item() > neg_score.item() else 0
                items[c, i] = correct
                correct_cnt += correct
            metrics[c] = correct_cnt / len(data_dict)
    return metrics, items


@pytest.mark.parametrize("family", ["hf-clip", "open_clip"])
def test_sugarcrepe_accuracy_equals_its_main_eval_item_by_item(tiny_specs, tmp_path, family):
    data = _sugarcrepe(tmp_path, growing=True)
    pairs = read_sugarcrepe(tmp_path / "data", tmp_path / "val2017")
    outcomes = negative_outcomes(score_hard_negative_pairs(tiny_specs[family], pairs, OPTIONS))
    table = negative_accuracy_table(outcomes, n_resamples=100).set_index("negative_kind")
    encoder = load_encoder(tiny_specs[family], "cpu", "fp32", progress=False)
    expected, items = sugarcrepe_main_eval(tmp_path / "val2017", data, encoder)
    stems = {category: stem for stem, category in SUGARCREPE_CATEGORIES.items()}
    mine = {(stems[row.negative_kind], row.item_id): int(row.correct) for row in outcomes.itertuples()}
    assert mine == items  # every item: the same verdict
    assert 0 < outcomes["correct"].mean() < 1  # both verdicts occur: a comparison of more than one constant
    for stem, accuracy in expected.items():
        assert table.loc[SUGARCREPE_CATEGORIES[stem], "accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert table.loc["mean", "accuracy"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert table.loc["all", "n"] == 56 and (table["chance"] == CHANCE).all()  # 5 + 6 + ... + 11 items
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()


def test_the_reader_keeps_every_item_in_file_order_with_its_pair_of_rows(tmp_path):
    data = _sugarcrepe(tmp_path, items_per_file=2)
    pairs = read_sugarcrepe(tmp_path / "data", tmp_path / "val2017", categories=["swap_att", "add_obj"])
    assert len(pairs) == 8 and pairs.attrs["base_dir"] == str((tmp_path / "val2017").resolve())
    first = data["swap_att"]["1"]
    assert pairs.iloc[0][["image", "caption", "match", "negative_kind", "category", "item_id", "status"]].tolist() \
        == [first["filename"], first["caption"], True, "", "swap-attribute", "1", "ok"]
    assert pairs.iloc[1][["caption", "match", "negative_kind", "twin_caption"]].tolist() \
        == [first["negative_caption"], False, "swap-attribute", first["caption"]]
    assert pairs["category"].tolist() == ["swap-attribute"] * 4 + ["add-object"] * 4


def test_missing_images_are_per_row_statuses_counted_apart(tiny_specs, tmp_path):
    data = _sugarcrepe(tmp_path, items_per_file=3)
    data["replace_rel"]["1"]["filename"] = "000000999999.jpg"
    data["replace_rel"]["4"]["filename"] = "../escape.jpg"
    data["swap_obj"]["7"]["filename"] = ""
    (tmp_path / "escape.jpg").write_bytes((tmp_path / "val2017" / "000000000000.jpg").read_bytes())
    for stem in ("replace_rel", "swap_obj"):
        (tmp_path / "data" / f"{stem}.json").write_text(json.dumps(data[stem]))
    pairs = read_sugarcrepe(tmp_path / "data", tmp_path / "val2017")
    statuses = pairs.groupby(["category", "item_id"])["status"].first()
    assert statuses["replace-relation", "1"] == "missing" and statuses["replace-relation", "4"] == "outside_root"
    assert statuses["swap-object", "7"] == "bad_reference" and (statuses == "ok").sum() == 18
    outcomes = negative_outcomes(score_hard_negative_pairs(tiny_specs["hf-clip"], pairs, OPTIONS))
    assert len(outcomes) == 21  # every item keeps its row
    assert outcomes.groupby(["category", "item_id"])["outcome"].first()[statuses.index].tolist() \
        == statuses.tolist()
    assert outcomes["correct"].isna().sum() == 3
    table = negative_accuracy_table(outcomes, n_resamples=10).set_index("negative_kind")
    assert (table.loc["replace-relation", "n"], table.loc["replace-relation", "n_unscored"]) == (1, 2)
    assert (table.loc["all", "n"], table.loc["all", "n_unscored"]) == (18, 3)


def test_malformed_sugarcrepe_files_fail_with_one_line(tmp_path):
    _sugarcrepe(tmp_path, items_per_file=1)
    images = tmp_path / "val2017"
    with pytest.raises(PairsTableError, match="no such folder"):
        read_sugarcrepe(tmp_path / "absent", images)
    with pytest.raises(PairsTableError, match="unknown SugarCrepe categories"):
        read_sugarcrepe(tmp_path / "data", images, categories=["replace_noun"])
    bad = {"[1, 2]": "not a SugarCrepe file", '{"1": {"filename": "a.jpg", "caption": "x"}}':
           "item '1' needs text fields filename, caption, negative_caption", "{": "cannot read it as JSON"}
    for text, message in bad.items():
        (tmp_path / "data" / "add_att.json").write_text(text)
        with pytest.raises(PairsTableError, match=re.escape(message)):
            read_sugarcrepe(tmp_path / "data", images)
    (tmp_path / "data" / "add_att.json").unlink()
    with pytest.raises(PairsTableError, match="no such SugarCrepe file"):
        read_sugarcrepe(tmp_path / "data", images)


def test_the_repositorys_earlier_object_file_names_are_read(tmp_path):
    data = _sugarcrepe(tmp_path, items_per_file=1)
    (tmp_path / "data" / "swap_obj.json").rename(tmp_path / "data" / "swap_ent.json")
    pairs = read_sugarcrepe(tmp_path / "data", tmp_path / "val2017", categories=["swap_obj"])
    assert pairs["caption"].tolist() == [data["swap_obj"]["1"]["caption"], data["swap_obj"]["1"]["negative_caption"]]


def brute_force_outcomes(scored: pd.DataFrame) -> list[tuple[str, object]]:
    """Per negative row, in order, (outcome, correct) by plain loops: its twin (or its image's only true caption)."""
    results = []
    for _, row in scored.iterrows():
        if row["match"] or not row["negative_kind"]:
            continue
        trues = scored[(scored["image"] == row["image"]) & scored["match"]]
        wanted = row.get("twin_caption") or (trues["caption"].iloc[0] if trues["caption"].nunique() == 1 else None)
        if row["status"] != "ok":
            results.append((row["status"], None))
        elif wanted is None and trues["caption"].nunique() > 1:
            results.append(("ambiguous_true_caption", None))
        elif wanted is None or not (trues["caption"] == wanted).any():
            results.append(("no_true_caption", None))
        elif trues[trues["caption"] == wanted]["status"].iloc[0] != "ok":
            results.append((trues[trues["caption"] == wanted]["status"].iloc[0], None))
        else:
            true_score = trues[trues["caption"] == wanted]["cosine"].iloc[0]
            results.append(("ok", bool(true_score > row["cosine"])))
    return results


def test_the_pairing_rules_against_a_brute_force_reference():
    rows = [  # image, caption, match, negative_kind, twin_caption, cosine, status
        ("a", "a dog", True, "", "", 0.5, "ok"), ("a", "a cat", False, "swap", "a dog", 0.4, "ok"),  # correct
        ("a", "a cow", False, "add", "", 0.5, "ok"),  # a tie counts wrong; twin: the image's only true caption
        ("b", "two dogs", True, "", "", 0.3, "ok"), ("b", "a dog", True, "", "", 0.2, "ok"),
        ("b", "one dog", False, "add", "", 0.1, "ok"),  # two true captions, no twin: ambiguous
        ("b", "three dogs", False, "swap", "two dogs", 0.6, "ok"),  # wrong
        ("c", "a tree", False, "add", "a bush", 0.1, "ok"),  # its twin is not there
        ("d", "a car", True, "", "", float("nan"), "missing"), ("d", "a bus", False, "swap", "a car", 0.2, "ok"),
        ("e", "a hat", True, "", "", 0.2, "ok"), ("e", "a cap", False, "swap", "a hat", float("nan"), "truncated"),
        ("a", "a dog", True, "", "", 0.5, "ok"),  # a true caption repeated on its image (SugarCrepe reuses them)
    ]
    scored = pd.DataFrame(rows, columns=["image", "caption", "match", "negative_kind", "twin_caption", "cosine",
                                         "status"])
    outcomes = negative_outcomes(scored)
    expected = brute_force_outcomes(scored)
    assert list(zip(outcomes["outcome"], [None if pd.isna(c) else bool(c) for c in outcomes["correct"]])) == expected
    assert expected == [("ok", True), ("ok", False), ("ambiguous_true_caption", None), ("ok", False),
                        ("no_true_caption", None), ("missing", None), ("truncated", None)]
    table = negative_accuracy_table(outcomes, n_resamples=10).set_index("negative_kind")
    assert table.loc["all", ["n", "n_unscored", "accuracy"]].tolist() == [3, 4, pytest.approx(1 / 3)]
    assert table.loc["mean", "accuracy"] == pytest.approx((1 / 2 + 0 / 1) / 2)  # swap 1 of 2, add 0 of 1
    with pytest.raises(ValueError, match=re.escape("lack column(s) ['cosine']")):
        negative_outcomes(scored.drop(columns=["cosine"]))


def test_the_scenes_hard_negatives_are_read_the_same_way(tiny_specs, tmp_path):
    scenes = generate_scenes(tmp_path / "scenes", n_train=0, n_val=0, n_test=24, image_size=32)
    scored = score_scene_pairs(load_encoder(tiny_specs["hf-clip"], "cpu", "fp32", progress=False), scenes, "test")
    expected = brute_force_outcomes(scored.assign(status="ok"))
    outcomes = hard_negative_outcomes(scored)  # the scenes benchmark's, through negative_outcomes
    assert list(zip(outcomes["outcome"], outcomes["correct"].astype(bool))) == expected
    negatives = scored[~scored["match"]].assign(correct=[correct for _, correct in expected])
    table = hard_negative_accuracy(scored, n_resamples=10).set_index(["negative_kind", "subset"])
    kinds = ["all", *sorted(negatives["negative_kind"].unique())]
    assert set(table.index) <= {(kind, subset) for kind in kinds for subset in ("all", "seen", "unseen")}
    assert {(kind, "all") for kind in kinds} <= set(table.index)
    for (kind, subset), row in table.iterrows():
        part = negatives if kind == "all" else negatives[negatives["negative_kind"] == kind]
        part = part if subset == "all" else part[part["seen_combination"] == (subset == "seen")]
        assert row["n"] == len(part) and row["accuracy"] == pytest.approx(part["correct"].mean())
        assert row["chance"] == CHANCE and row["ci_low"] <= row["accuracy"] <= row["ci_high"]
