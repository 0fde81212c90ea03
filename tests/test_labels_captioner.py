"""The captioning labeller on a tiny random ViT-GPT2 captioner saved and loaded in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clipeval.labels.base import LABEL_COLUMNS
from clipeval.labels.captioner import Captioner, sequence_confidence
from clipeval.models.registry import CheckpointError
from clipeval.models.tiny import build_tiny_captioner

READABLE = [f"image_{i}.png" for i in range(5)]
REFS = [*READABLE, "missing.png", "not_an_image.jpg", "image_0.png"]


@pytest.fixture(scope="module")
def captioner_folder(tmp_path_factory, one_torch_thread):
    """A tiny random captioner saved with ``save_pretrained`` (model, tokenizer, image processor)."""
    return build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner") / "vit-gpt2")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Five random-noise images, and a text file named like an image."""
    folder = tmp_path_factory.mktemp("captioner-images")
    rng = np.random.default_rng(0)
    for name in READABLE:
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / name)
    (folder / "not_an_image.jpg").write_text("not an image")
    return folder


def caption_texts(run) -> dict[str, str]:
    return dict(zip(run.labels["image"], run.labels["text"]))


def test_captions_every_readable_image_and_accounts_for_every_input(captioner_folder, image_dir):
    run = Captioner(str(captioner_folder), progress=False).label(REFS, image_dir)

    assert list(run.labels.columns) == list(LABEL_COLUMNS)
    assert run.labels["image"].tolist() == READABLE  # the repeated image is captioned once
    assert (run.labels["text"].str.len() > 0).all()
    assert set(run.labels["labeller"]) == {"captioner"} and set(run.labels["model"]) == {str(captioner_folder)}
    assert (run.labels["threshold"] == 0.0).all()
    assert len(set(run.labels["text"])) == len(READABLE)  # the tiny model's captions depend on the image
    assert run.images["image"].tolist() == REFS
    assert run.images["status"].tolist() == ["ok"] * 5 + ["missing", "decode_error", "ok"]
    assert run.images["n_labels"].tolist() == [1] * 5 + [0, 0, 1]
    assert run.images.loc[5:6, "error"].str.len().gt(0).all()
    assert run.stats["images"] == len(REFS) and run.stats["images_labelled"] == 6 and run.stats["labels"] == 5
    assert run.stats["batch_size"] == 8 and run.stats["min_confidence"] == 0.0
    assert run.stats["generate_kwargs"] == {"max_new_tokens": 30, "num_beams": 1} and run.stats["seconds"] > 0


def test_batch_size_does_not_change_captions(captioner_folder, image_dir):
    one = Captioner(str(captioner_folder), batch_size=1, progress=False).label(READABLE, image_dir)
    four = Captioner(str(captioner_folder), batch_size=4, progress=False).label(READABLE, image_dir)

    assert one.labels["text"].tolist() == four.labels["text"].tolist()
    np.testing.assert_allclose(one.labels["confidence"], four.labels["confidence"], rtol=1e-4)


def test_confidence_is_the_geometric_mean_token_probability(captioner_folder, image_dir):
    """Recomputed by teacher forcing the generated captions through the model, outside the captioner."""
    from transformers import VisionEncoderDecoderModel, ViTImageProcessor

    settings = {"max_new_tokens": 6, "num_beams": 1}
    images = [Image.open(image_dir / name).convert("RGB") for name in READABLE[:3]]
    captions = Captioner(str(captioner_folder), generate_kwargs=settings, progress=False).caption(images)

    model = VisionEncoderDecoderModel.from_pretrained(captioner_folder).eval()
    pixels = ViTImageProcessor.from_pretrained(captioner_folder)(images=images, return_tensors="pt").pixel_values
    with torch.inference_mode():
        sequences = model.generate(pixel_values=pixels, **settings)
        logits = model(pixel_values=pixels, decoder_input_ids=sequences[:, :-1]).logits
    log_probs = logits.log_softmax(dim=-1).gather(2, sequences[:, 1:, None])[..., 0]

    confidences = [pairs[0][1] for pairs in captions]
    np.testing.assert_allclose(confidences, log_probs.mean(dim=1).exp().numpy(), rtol=1e-4)
    assert all(0.0 < confidence <= 1.0 for confidence in confidences)


def test_sequence_confidence_ignores_padding_after_the_end_token():
    log_probs = torch.log(torch.tensor([[0.5, 0.125, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]]))
    tokens = torch.tensor([[7, 2, 2, 2], [7, 8, 9, 7]])  # 2 ends the first sequence; the second never ends

    confidence = sequence_confidence(log_probs, tokens, torch.tensor([2]))

    np.testing.assert_allclose(confidence.numpy(), [0.25, 0.25], rtol=1e-6)


def test_min_confidence_filters_captions(captioner_folder, image_dir):
    everything = Captioner(str(captioner_folder), progress=False).label(READABLE, image_dir)
    cut = float(everything.labels["confidence"].median())
    some = Captioner(str(captioner_folder), min_confidence=cut, progress=False).label(READABLE, image_dir)
    nothing = Captioner(str(captioner_folder), min_confidence=1.0, progress=False).label(REFS, image_dir)

    assert len(everything.labels) == len(READABLE)
    confident = everything.labels["confidence"] >= cut
    assert some.labels["image"].tolist() == everything.labels.loc[confident, "image"].tolist()
    assert 0 < len(some.labels) < len(READABLE) and (some.labels["threshold"] == cut).all()
    assert nothing.labels.empty and list(nothing.labels.columns) == list(LABEL_COLUMNS)
    assert nothing.images["status"].tolist() == ["no_label"] * 5 + ["missing", "decode_error", "no_label"]
    assert nothing.images["n_labels"].eq(0).all()


def test_generate_kwargs_reach_generate(captioner_folder, image_dir):
    default = Captioner(str(captioner_folder), progress=False).label(READABLE, image_dir)
    short = Captioner(str(captioner_folder), generate_kwargs={"max_new_tokens": 3}, progress=False)
    short_run = short.label(READABLE, image_dir)
    beams = Captioner(str(captioner_folder), generate_kwargs={"max_new_tokens": 5, "num_beams": 3,
                                                              "num_return_sequences": 2}, progress=False)
    beam_run = beams.label(READABLE, image_dir)

    words = short_run.labels["text"].str.split().str.len()
    assert len(words) == len(READABLE) and (words <= 3).all()  # a CLIP BPE token ends at most one word
    assert (default.labels["text"].str.split().str.len() > 3).all()
    assert beam_run.images["n_labels"].tolist() == [2] * len(READABLE)
    assert beam_run.stats["generate_kwargs"]["num_return_sequences"] == 2
    assert beam_run.labels["confidence"].between(0, 1, inclusive="right").all()


def test_progress_false_hides_the_loading_bar(captioner_folder, image_dir, capfd):
    Captioner(str(captioner_folder), progress=False).label(READABLE[:1], image_dir)
    assert "Loading weights" not in capfd.readouterr().err
    Captioner(str(captioner_folder), progress=True).label(READABLE[:1], image_dir)
    assert "Loading weights" in capfd.readouterr().err


def test_hub_name_without_network_is_a_one_line_checkpoint_error(image_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    captioner = Captioner(progress=False)  # loading is lazy: nothing happens yet
    with pytest.raises(CheckpointError) as caught:
        captioner.label(READABLE[:1], image_dir)
    message = str(caught.value)
    assert "hf:nlpconnect/vit-gpt2-image-captioning" in message and "offline" in message
    assert "\n" not in message


def test_missing_local_folder_and_bad_settings_are_clear_errors(captioner_folder, tmp_path, image_dir):
    with pytest.raises(CheckpointError, match="no such directory"):
        Captioner(str(tmp_path / "absent"), progress=False).label(READABLE[:1], image_dir)
    with pytest.raises(CheckpointError, match="a prompt needs a model with a processor class"):
        Captioner(str(captioner_folder), prompt="a photo of", progress=False).label(READABLE[:1], image_dir)
    with pytest.raises(ValueError, match="min_confidence"):
        Captioner(min_confidence=1.5)


def test_unreadable_images_only_need_no_model(image_dir):
    run = Captioner("nlpconnect/vit-gpt2-image-captioning", progress=False).label(["missing.png"], image_dir)

    assert run.labels.empty
    assert run.images[["image", "status", "n_labels"]].values.tolist() == [["missing.png", "missing", 0]]
