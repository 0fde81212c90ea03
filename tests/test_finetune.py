"""Fine-tuning any checkpoint family (tiny models, tiny scenes, a few steps) and measuring gain and forgetting."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.scenes import generate_scenes, read_scenes_retrieval
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.eval.before_after import compare_before_after
from clipeval.eval.options import RetrievalOptions
from clipeval.models.catalogue import describe_checkpoint
from clipeval.models.dual import DualEncoderConfig, build_dual_encoder, save_dual
from clipeval.models.registry import load_encoder
from clipeval.runs.cli import main
from clipeval.train import finetune as finetune_module
from clipeval.train.adapters import add_adapters, attention_weights, merge_adapters
from clipeval.train.common import sigmoid_loss
from clipeval.train.finetune import finetune, split_pairs, training_pairs
from clipeval.train.options import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_DUAL = DualEncoderConfig(embed_dim=16, image_size=32, text_dim=32, text_layers=2, text_heads=2,
                              text_hidden_dim=37, pool_heads=4)
TEXTS = ["a red circle", "two blue squares left of a green cross"]


def quick(**changes) -> FinetuneConfig:
    return FinetuneConfig(**{"steps": 2, "batch_size": 8, "lr": 1e-3, "device": "cpu", "progress": False,
                             "eval_batch_size": 16, **changes})


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=24, n_val=8, n_test=8, image_size=32, seed=1)


@pytest.fixture(scope="module")
def pairs(scenes):
    return read_pairs(scenes / "pairs_train.csv")


@pytest.fixture(scope="module")
def dual_spec(pairs, tmp_path_factory):
    torch.manual_seed(0)
    model, tokenizer = build_dual_encoder(TINY_DUAL, pairs["caption"].tolist())
    return f"dual:{save_dual(model, tokenizer, tmp_path_factory.mktemp('dual') / 'dual')}"


@pytest.fixture(scope="module")
def specs(tiny_specs, dual_spec):
    return {**tiny_specs, "dual": dual_spec}


def probe_pixels(encoder) -> torch.Tensor:
    return torch.stack([encoder.preprocess(Image.new("RGB", (32, 32), colour)) for colour in ((200, 10, 10),
                                                                                              (10, 10, 200))])


@pytest.mark.parametrize("family, mode, prefix", [
    ("hf-clip", "lora", "hf:"), ("hf-siglip", "full", "hf:"), ("open_clip", "full", "open_clip:"),
    ("open_clip_arch", "lit", "open_clip:clipeval-tiny-ViT@"), ("dual", "lora", "dual:")])
def test_saved_checkpoint_loads_through_its_spec_and_scores_as_in_memory(specs, pairs, tmp_path, family, mode,
                                                                           prefix):
    base = load_encoder(specs[family], "cpu", "fp32", progress=False)
    result = finetune(specs[family], pairs, tmp_path, quick(mode=mode, hard_negatives=True))
    assert result.spec.startswith(prefix)
    loaded = load_encoder(result.spec, "cpu", "fp32", progress=False)
    tuned, saved = result.encoder.model.state_dict(), loaded.model.state_dict()
    assert tuned.keys() == saved.keys() == base.model.state_dict().keys()  # adapters merged: a plain model
    assert all(torch.equal(tuned[name], saved[name]) for name in tuned)
    pixels = probe_pixels(loaded)
    torch.testing.assert_close(result.encoder.encode_texts(TEXTS), loaded.encode_texts(TEXTS), rtol=0, atol=1e-6)
    torch.testing.assert_close(result.encoder.encode_images(pixels), loaded.encode_images(pixels), rtol=0, atol=1e-6)
    assert not torch.allclose(base.encode_texts(TEXTS), loaded.encode_texts(TEXTS))  # it did train
    info = json.loads((tmp_path / "checkpoint" / "clipeval_checkpoint.json").read_text())
    assert info["fine_tuned_from"] == specs[family]
    assert info["provenance"]["base_weights_sha256"] == base.weights_digest()
    assert info["provenance"]["weights_sha256"] == loaded.weights_digest() != base.weights_digest()
    assert describe_checkpoint(result.spec).fine_tuned_from == specs[family]


def test_in_memory_model_computes_exactly_as_the_loaded_one(specs, pairs, tmp_path):
    # nn.MultiheadAttention picks its kernel by whether parameters require grad: a model left frozen after
    # training scored open_clip texts 1e-7 away from the same weights loaded from disk
    result = finetune(specs["open_clip"], pairs, tmp_path, quick())
    loaded = load_encoder(result.spec, "cpu", "fp32", progress=False)
    assert torch.equal(result.encoder.encode_texts(TEXTS), loaded.encode_texts(TEXTS))


def test_lit_locks_the_image_tower_and_its_batchnorm_statistics(specs, pairs, tmp_path):
    family = "dual"
    base = load_encoder(specs[family], "cpu", "fp32", progress=False)
    result = finetune(specs[family], pairs, tmp_path, quick(mode="lit"))
    pixels = probe_pixels(base)
    assert torch.equal(base.encode_images(pixels), result.encoder.encode_images(pixels))  # BatchNorm stats too
    assert not torch.allclose(base.encode_texts(TEXTS), result.encoder.encode_texts(TEXTS))
    assert result.history["trainable_parameters"] < result.history["total_parameters"]


@pytest.mark.parametrize("family, expected", [("open_clip", "attn.in_proj_weight"), ("hf-clip", "q_proj.weight"),
                                              ("dual", "q_lin.weight")])
def test_adapters_start_as_the_base_model_and_merge_into_plain_weights(specs, family, expected):
    encoder = load_encoder(specs[family], "cpu", "fp32", progress=False)
    before, names = encoder.encode_texts(TEXTS), [name for _, _, name in attention_weights(encoder.model)]
    assert any(name.endswith(expected) for name in names)
    keys = set(encoder.model.state_dict())
    torch.manual_seed(0)
    adapted = add_adapters(encoder.model, rank=4)
    assert adapted == names
    trainable = [name for name, parameter in encoder.model.named_parameters() if parameter.requires_grad]
    assert trainable and all(name.endswith((".down", ".up")) for name in trainable)
    # up starts at zero (frozen weights may take another attention kernel: equal up to rounding)
    torch.testing.assert_close(before, encoder.encode_texts(TEXTS), rtol=0, atol=1e-6)
    merge_adapters(encoder.model)
    assert set(encoder.model.state_dict()) == keys


def test_dual_attention_pool_output_projection_is_adapted_but_not_mlp_c_proj(specs):
    dual = load_encoder(specs["dual"], "cpu", "fp32", progress=False)
    assert "image_pool.c_proj.weight" in [name for _, _, name in attention_weights(dual.model)]
    open_clip = load_encoder(specs["open_clip"], "cpu", "fp32", progress=False)
    assert not any("mlp.c_proj" in name for _, _, name in attention_weights(open_clip.model))


def test_resume_continues_from_the_saved_step_with_the_same_batches(specs, pairs, tmp_path, monkeypatch):
    config = quick(steps=4, batch_size=4, save_every=2, hard_negatives=True)
    whole = finetune(specs["open_clip"], pairs, tmp_path / "whole", config)
    real_step, calls = finetune_module.optimizer_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(specs["open_clip"], pairs, tmp_path / "cut", config)
    monkeypatch.setattr(finetune_module, "optimizer_step", real_step)
    resumed = finetune(specs["open_clip"], pairs, tmp_path / "cut", config, resume=True)
    assert resumed.history["resumed_from_step"] == 2
    whole_state, resumed_state = whole.encoder.model.state_dict(), resumed.encoder.model.state_dict()
    assert all(torch.equal(whole_state[name], resumed_state[name]) for name in whole_state)
    assert [entry["step"] for entry in resumed.history["epochs"]] == \
        [entry["step"] for entry in whole.history["epochs"]]


def test_a_finetune_folder_holding_another_run_is_refused_and_overwrite_clears_it_first(specs, scenes, tmp_path,
                                                                                      capsys, monkeypatch):
    from clipeval.jobs import finetune_run as runs_finetune

    out = tmp_path / "run"
    base = ["finetune", "--checkpoint", specs["dual"], "--pairs", str(scenes / "pairs_train.csv"), "--holdout", "0.25",
            "--steps", "1", "--batch-size", "8", "--device", "cpu", "--no-progress", "--bootstrap", "20",
            "--out", str(out)]
    assert main([*base, "--forget-pairs", str(scenes / "pairs_val.csv")]) == 0
    first = (out / "finetune.json").read_text()
    capsys.readouterr()
    assert main([*base, "--lr", "1e-3"]) == 2  # the forget set dropped and another learning rate: another run
    error = capsys.readouterr().err
    assert f"error: {out} holds an earlier run with different forgetting ('pairs_val' then, None now), " \
           "forgetting_data (" in error
    assert "and lr (1e-05 then, 0.001 now); rerun with --overwrite to discard it" in error
    assert (out / "finetune.json").read_text() == first and (out / "checkpoint").is_dir()  # untouched

    seen = []

    def stopped(*args, **kwargs):
        seen.append(sorted(path.name for path in out.iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(runs_finetune, "finetune", stopped)
    assert main([*base, "--lr", "1e-3", "--overwrite"]) == 130
    # the earlier run's checkpoint, state, tables and manifest were gone before training began
    assert seen == [["manifest.json.lock", "run.json"]]
    assert main([*base, "--lr", "1e-3", "--resume"]) == 130  # the same run again: claimed, not refused
    assert len(seen) == 2


def test_training_rows_say_what_each_row_became(pairs, tmp_path):
    broken = pd.concat([pairs, pd.DataFrame({"image": ["images/train/missing.png"], "caption": ["a red circle"],
                                             "match": [True]})], ignore_index=True)
    broken.attrs = pairs.attrs
    data = training_pairs(broken, lambda image: torch.zeros(3, 4, 4), negative_kinds=("relation",))
    rows = data.rows
    assert len(rows) == len(broken)
    assert rows.iloc[-1][["role", "status"]].tolist() == ["unused", "missing"]
    negatives = rows[broken["match"].eq(False)]
    kinds = broken.loc[negatives.index, "negative_kind"]
    assert (negatives.loc[kinds.ne("relation"), "role"] == "unused").all()
    assert sum(map(len, data.negatives)) == int((negatives["role"] == "negative").sum()) > 0
    assert len(data.captions) == broken.loc[broken["match"], "image"].nunique() - 1


def test_hard_negatives_asked_for_but_none_usable_is_an_error(specs, pairs, tmp_path):
    with pytest.raises(ValueError, match="no usable hard negative"):
        finetune(specs["dual"], pairs[pairs["match"]], tmp_path, quick(hard_negatives=True))


def test_split_pairs_shares_no_image(pairs):
    train, held = split_pairs(pairs, 0.25, seed=3)
    assert not set(train["image"]) & set(held["image"])
    assert len(train) + len(held) == len(pairs)
    assert held["image"].nunique() == round(0.25 * pairs["image"].nunique())
    assert split_pairs(pairs, 0.25, seed=3)[1].equals(held)
    assert held.attrs["base_dir"] == pairs.attrs["base_dir"]
    with pytest.raises(ValueError):
        split_pairs(pairs, 1.0)


def test_sigmoid_loss_matches_the_pairwise_definition():
    generator = torch.Generator().manual_seed(0)
    images, texts, negatives = (torch.nn.functional.normalize(torch.randn(n, 8, generator=generator), dim=-1)
                                for n in (3, 3, 2))
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    expected = 0.0
    for i in range(3):
        for j, text in enumerate(torch.cat([texts, negatives])):
            label = 1.0 if i == j else -1.0
            expected -= torch.nn.functional.logsigmoid(label * (scale * images[i] @ text + bias))
    torch.testing.assert_close(sigmoid_loss(images, texts, scale, bias, negatives), expected / 3)


def test_before_after_of_a_checkpoint_with_itself_is_zero(specs, scenes):
    dataset = read_scenes_retrieval(scenes, "val")
    compared = compare_before_after(dataset, specs["dual"], specs["dual"], "held-out",
                                    RetrievalOptions(n_resamples=50), EmbedOptions(device="cpu", progress=False))
    assert set(compared.differences["direction"]) == {"text_to_image", "image_to_text"}
    assert (compared.differences[["difference", "ci_low", "ci_high"]] == 0).all().all()
    assert np.allclose(compared.differences["before"], compared.differences["after"])


def test_finetune_command_writes_gain_forgetting_and_a_loadable_checkpoint(specs, scenes, tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["finetune", "--checkpoint", specs["dual"], "--pairs", str(scenes / "pairs_train.csv"),
                   "--holdout", "0.25", "--forget-pairs", str(scenes / "pairs_val.csv"), "--mode", "full",
                   "--steps", "2", "--batch-size", "8", "--lr", "1e-3", "--hard-negatives", "--negative-kind",
                   "relation", "--device", "cpu", "--no-progress", "--bootstrap", "100", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert f"-> dual:{out / 'checkpoint'}" in printed and "forgetting" in printed
    table = pd.read_csv(out / "gain_forgetting.csv")
    # the console says what the table says: each metric's chance level, and which ones are trivial
    lines = {tuple(line.split()[:4]): line.rstrip() for line in printed.splitlines()
             if line.split()[:1] in (["held-out"], ["forgetting"])}
    assert len(lines) == len(table)
    for row in table.itertuples():
        line = lines[(row.role, row.dataset, row.direction, row.metric)]
        assert f"{row.chance:.4f}".rstrip("0").rstrip(".") in line
        assert line.endswith(f"trivial: k >= all {row.n_candidates}") == row.trivial
    held = table[(table["role"] == "held-out") & (table["direction"] == "text_to_image")]  # 6 images ranked
    assert held.loc[held["metric"] == "hit_rate@10", "trivial"].all() and held["n_candidates"].max() <= 10
    assert not held.loc[held["metric"] == "hit_rate@1", "trivial"].any()
    assert set(table["role"]) == {"held-out", "forgetting"}
    assert set(table["direction"]) == {"text_to_image", "image_to_text"}
    assert ((table["ci_low"] <= table["difference"] + 1e-12) & (table["difference"] <= table["ci_high"] + 1e-12)).all()
    assert np.allclose(table["after"] - table["before"], table["difference"])
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["sets"]["held-out"]["images_also_in_training"] == 0
    assert summary["history"]["settings"]["negative_kinds"] == ["relation"]
    held_out = summary["sets"]["held-out"]["images"]
    rows = pd.read_csv(out / "train_pairs.csv")
    assert rows["image"].nunique() + held_out == read_pairs(scenes / "pairs_train.csv")["image"].nunique()
    assert load_encoder(f"dual:{out / 'checkpoint'}", "cpu", progress=False).weights_digest() == \
        summary["provenance"]["weights_sha256"]


def test_finetune_command_refuses_a_baseline(scenes, tmp_path, capsys):
    status = main(["finetune", "--checkpoint", "baseline:bert-resnet50-random", "--pairs",
                   str(scenes / "pairs_train.csv"), "--device", "cpu", "--no-progress", "--out", str(tmp_path)])
    assert status == 2
    assert "fine-tuning supports hf:, open_clip:, dual:" in capsys.readouterr().err



def test_no_progress_silences_every_bar_the_model_libraries_included(specs, scenes, tmp_path, capfd):
    status = main(["finetune", "--checkpoint", specs["hf-clip"], "--pairs", str(scenes / "pairs_train.csv"),
                   "--holdout", "0.25", "--mode", "lora", "--steps", "1", "--batch-size", "8", "--device", "cpu",
                   "--no-progress", "--bootstrap", "20", "--out", str(tmp_path / "run")])
    assert status == 0
    printed = capfd.readouterr()
    for bar in ("Writing model shards", "Loading weights", "it/s]", "%|"):  # transformers' and tqdm's marks
        assert bar not in printed.err + printed.out, bar


def test_finetune_measures_on_an_eval_set_whose_images_lie_under_image_root(specs, scenes, tmp_path, capsys):
    """build-evalset's images.csv names its images from outside its own folder: --image-root lets them be read."""
    from clipeval.models.tiny import build_tiny_classifier

    classifier = build_tiny_classifier(tmp_path / "clf", ["a red circle", "a blue square"])
    assert main(["build-evalset", "--images", str(scenes / "images" / "test"), "--labeller", "classifier",
                 "--model", str(classifier), "--threshold", "0", "--out", str(tmp_path / "set"), "--device", "cpu",
                 "--no-progress"]) == 0
    command = ["finetune", "--checkpoint", specs["dual"], "--pairs", str(scenes / "pairs_train.csv"), "--eval-set",
               str(tmp_path / "set"), "--steps", "1", "--batch-size", "8", "--device", "cpu", "--no-progress",
               "--bootstrap", "20", "--out", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(command) == 2  # confined without it: every image of the set is outside_root, and it says so
    assert "error: no image of set could be used (outside_root: " in capsys.readouterr().err
    assert main([*command, "--image-root", str(scenes / "images" / "test"), "--overwrite"]) == 0
    metrics = pd.read_csv(tmp_path / "run" / "before_after_metrics.csv")
    assert (metrics["n_images"] == len(list((scenes / "images" / "test").glob("*.png")))).all()
