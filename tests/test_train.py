"""Training and evaluating the dual encoder on tiny scenes (tiny model, 32 px, a few steps)."""

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from clipeval.data.scenes import generate_scenes
from clipeval.eval.scenes_benchmark import evaluate_scenes, hard_negative_accuracy, summarize_match_scores
from clipeval.models.dual import DualEncoderConfig, build_dual_encoder, read_history
from clipeval.models.registry import load_encoder
from clipeval.train.dual import contrastive_loss, train_dual, train_step
from clipeval.train.options import TrainConfig

TINY = DualEncoderConfig(embed_dim=16, image_size=32, text_dim=32, text_layers=2, text_heads=2, text_hidden_dim=37,
                         pool_heads=4)
CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, progress=False, model=TINY)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=48, n_val=12, n_test=16, image_size=32, seed=1)


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    return train_dual(scenes, tmp_path_factory.mktemp("models") / "dual", CONFIG)


def test_one_training_step_reduces_the_loss():
    torch.manual_seed(0)
    captions = ["a red circle", "two blue squares", "a green cross above a yellow circle", 'a sign that says "SALE"']
    model, tokenizer = build_dual_encoder(TINY, captions)
    model.train()
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    batch = (torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
             tokens["input_ids"], tokens["attention_mask"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = train_step(model, optimizer, *batch)
    after = train_step(model, optimizer, *batch)
    assert after < before


def test_train_step_takes_hard_negatives_after_the_captions():
    torch.manual_seed(0)
    captions = ["a red circle", "two blue squares", "a green cross above a yellow circle", 'a sign that says "SALE"']
    negatives = ["a blue circle", "three blue squares", "a green cross below a yellow circle",
                 'a sign that says "STOP"']
    model, tokenizer = build_dual_encoder(TINY, captions)
    model.train()
    tokens = tokenizer(captions + negatives, padding=True, return_tensors="pt")
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images, texts, scale = model(pixels, tokens["input_ids"], tokens["attention_mask"])
    with_negatives = contrastive_loss(images, texts[:4], scale, texts[4:]).item()
    assert with_negatives != pytest.approx(contrastive_loss(images, texts[:4], scale).item())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = [train_step(model, optimizer, pixels, tokens["input_ids"], tokens["attention_mask"]) for _ in range(11)]
    assert losses[0] == pytest.approx(with_negatives, rel=1e-5)  # the rows after the N captions are negatives
    assert losses[-1] < losses[0] / 2  # ten steps fit the batch: 5.3 -> 0.4 here


def test_training_with_hard_negatives(scenes, tmp_path):
    config = replace(CONFIG, epochs=1, hard_negatives=True)
    history = read_history(train_dual(scenes, tmp_path / "negclip", config))
    assert history["config"]["hard_negatives"] is True and history["n_train_hard_negatives"] > 48
    assert np.isfinite(history["epochs"][0]["train_loss"])
    copy = shutil.copytree(scenes, tmp_path / "scenes")
    pairs = pd.read_csv(copy / "pairs_train.csv", keep_default_na=False)
    first = pairs["scene_id"].iloc[0]
    pairs[pairs["match"] | (pairs["scene_id"] != first)].to_csv(copy / "pairs_train.csv", index=False)
    with pytest.raises(ValueError, match=r"1 training scenes .* no hard-negative caption"):
        train_dual(copy, tmp_path / "dual", config)


def test_training_writes_a_loadable_model_and_its_history(trained):
    history = read_history(trained)
    assert [epoch["epoch"] for epoch in history["epochs"]] == [1, 2]
    assert history["n_train_scenes"] == 48 and history["config"]["model"]["image_size"] == 32
    for epoch in history["epochs"]:
        assert np.isfinite(epoch["train_loss"]) and 0 <= epoch["val_hit_rate@5"] <= 1 and 0 < epoch["val_mrr"] <= 1
    encoder = load_encoder(f"dual:{trained}", device="cpu")
    assert encoder.encode_texts(["a red circle"]).shape == (1, 16)


def test_training_is_deterministic(scenes, trained, tmp_path):
    again = train_dual(scenes, tmp_path / "again", CONFIG)
    first, second = load_file(trained / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_evaluate_scenes_reports_retrieval_scores_and_hard_negatives(scenes, trained):
    result = evaluate_scenes(load_encoder(f"dual:{trained}", device="cpu"), scenes, "test")
    retrieval = result["retrieval"]
    assert list(retrieval.index) == ["all", "seen", "unseen"]
    seen, unseen = retrieval.loc["seen", "n_queries"], retrieval.loc["unseen", "n_queries"]
    assert retrieval.loc["all", "n_queries"] == seen + unseen
    assert {"hit_rate@5", "mrr", "median_rank"} <= set(retrieval.columns)
    assert set(result["match_scores"]) == {"matched_mean", "mismatched_mean", "gap", "auc"}
    assert result["scores"].shape == (len(result["dataset"].queries), 16)
    negatives = result["hard_negatives"]
    assert set(negatives["negative_kind"]) == {"all", "colour", "count", "relation"}
    assert negatives["accuracy"].between(0, 1).all()


def test_logged_validation_metrics_match_scoring_the_saved_model(scenes, trained):
    last = read_history(trained)["epochs"][-1]
    retrieval = evaluate_scenes(load_encoder(f"dual:{trained}", device="cpu"), scenes, "val")["retrieval"]
    for key in ("hit_rate@1", "hit_rate@5", "hit_rate@10", "mrr"):
        assert last[f"val_{key}"] == pytest.approx(retrieval.loc["all", key], abs=1e-6)


def test_hard_negative_accuracy_compares_each_negative_with_its_twin():
    scored = pd.DataFrame({
        "scene_id": ["a", "a", "a", "b", "b"],
        "caption": ["red circle", "blue circle", "two red circles", "x left of y", "x right of y"],
        "match": [True, False, False, True, False],
        "negative_kind": ["", "colour", "count", "", "relation"],
        "twin_caption": ["", "red circle", "red circle", "", "x left of y"],
        "seen_combination": [True, True, True, False, False],
        "cosine": [0.5, 0.4, 0.6, 0.3, 0.1],
    })
    table = hard_negative_accuracy(scored).set_index(["negative_kind", "subset"])
    assert table.loc[("all", "all"), "accuracy"] == pytest.approx(2 / 3)
    assert table.loc[("colour", "all"), "accuracy"] == 1 and table.loc[("count", "all"), "accuracy"] == 0
    assert table.loc[("all", "unseen"), "n"] == 1 and table.loc[("all", "seen"), "accuracy"] == 0.5


def test_summarize_match_scores():
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    summary = summarize_match_scores(scores, np.eye(2, dtype=bool))
    assert summary["matched_mean"] == pytest.approx(0.85) and summary["mismatched_mean"] == pytest.approx(0.15)
    assert summary["auc"] == 1.0
