"""Both loaders round-trip tiny checkpoints saved in the real on-disk formats."""

import numpy as np
import pytest
import torch
from PIL import Image

from clipeval.models.registry import load_encoder

CAPTIONS = ["a red square", "a photo of a dog on the grass", "ünïcödé 🙂 legenda em português"]


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(3)]


@pytest.mark.parametrize("name", ["hf-clip", "hf-siglip", "open_clip", "open_clip_arch"])
def test_encoder_interface(tiny_specs, name):
    encoder = load_encoder(tiny_specs[name], device="cpu")
    pixels = torch.stack([encoder.preprocess(image) for image in _images()])
    images, texts = encoder.encode_images(pixels), encoder.encode_texts(CAPTIONS)
    assert images.shape == (3, 32) and texts.shape == (3, 32)
    assert images.dtype == torch.float32
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(3))
    assert encoder.name == tiny_specs[name]
    assert encoder.logit_scale > 0


def test_hf_round_trip_matches_the_saved_model(tiny_specs):
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_specs["hf-clip"].removeprefix("hf:")
    encoder = load_encoder(tiny_specs["hf-clip"], device="cpu")
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        tokens = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
        expected = model.get_text_features(**tokens).pooler_output
        pixels = torch.stack([encoder.preprocess(image) for image in _images()])
        expected_images = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(encoder.encode_texts(CAPTIONS), torch.nn.functional.normalize(expected, dim=-1))
    torch.testing.assert_close(encoder.encode_images(pixels), torch.nn.functional.normalize(expected_images, dim=-1))


def test_open_clip_folder_and_weights_file_give_the_same_model(tiny_specs):
    folder = load_encoder(tiny_specs["open_clip"], device="cpu")
    weights_file = load_encoder(tiny_specs["open_clip_arch"], device="cpu")
    pixels = torch.stack([folder.preprocess(image) for image in _images()])
    torch.testing.assert_close(folder.encode_images(pixels), weights_file.encode_images(pixels))
    torch.testing.assert_close(folder.encode_texts(CAPTIONS), weights_file.encode_texts(CAPTIONS))


def test_siglip_reports_bias_and_truncation(tiny_specs):
    encoder = load_encoder(tiny_specs["hf-siglip"], device="cpu")
    assert encoder.logit_bias is not None
    assert encoder.context_length == 16
    assert encoder.truncated(["short", "word " * 40]).count(True) == 1


def test_open_clip_encodes_captions_on_their_shortest_prefix_with_encode_texts_numbers(tiny_specs):
    from clipeval.models.open_clip import _reads_a_prefix

    encoder = load_encoder(tiny_specs["open_clip"], device="cpu")
    assert _reads_a_prefix(encoder.model)  # causal mask, end-token pooling: the prefix path runs
    for captions in (["two dogs", "a man riding a wave on top of a surfboard"], ["a long caption " * 40, "a cat"]):
        tokens = encoder.tokenizer(captions)
        with torch.inference_mode():
            full = torch.nn.functional.normalize(encoder.model.encode_text(tokens), dim=-1)
        torch.testing.assert_close(encoder.encode_texts(captions), full, rtol=0, atol=1e-5)
    mask = encoder.model.attn_mask
    encoder.model.attn_mask = torch.zeros_like(mask)  # a text tower that attends both ways reads every position
    assert not _reads_a_prefix(encoder.model)
