"""The BERT + ResNet-50 baseline: shapes, normalisation, projection size, determinism, offline error."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import BertConfig

from clipeval.models.baseline import PROJECTION, BaselineEncoder, build_baseline, build_offline_tokenizer, mean_pool
from clipeval.models.registry import CheckpointError, load_encoder

CPU = torch.device("cpu")
CAPTIONS = ["A dog running on the beach.", "two cats", "Ünïcödé caption 日本語 🙂 " + "word " * 80]


def tiny_config(tokenizer):
    return BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64)


@pytest.fixture(scope="module")
def tiny_encoder():
    tokenizer = build_offline_tokenizer()
    model = build_baseline(tiny_config(tokenizer), "resnet50", seed=0)
    return BaselineEncoder(model, tokenizer, "baseline:tiny-random", CPU, image_size=64)


def images():
    return [Image.new("RGB", (80, 60), (200, 30, 30)), Image.new("RGB", (50, 90), (20, 120, 220))]


def test_shapes_and_unit_norm(tiny_encoder):
    pixels = torch.stack([tiny_encoder.preprocess(image) for image in images()])
    assert pixels.shape == (2, 3, 64, 64)
    image_embeddings = tiny_encoder.encode_images(pixels)
    text_embeddings = tiny_encoder.encode_texts(CAPTIONS)
    assert image_embeddings.shape == (2, 1000) and text_embeddings.shape == (3, 1000)
    for embeddings in (image_embeddings, text_embeddings):
        assert embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(embeddings)))


def test_mean_pool_ignores_padding(tiny_encoder):
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    alone = tiny_encoder.encode_texts(["two cats"])
    padded = tiny_encoder.encode_texts(["two cats", "a much longer caption about a dog on a red bike"])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_truncation_counted(tiny_encoder):
    assert tiny_encoder.context_length == 64
    assert tiny_encoder.truncated(CAPTIONS).count(True) == 1


def test_offline_tokenizer_is_fixed_and_total():
    tokenizer = build_offline_tokenizer()
    assert tokenizer.tokenize("A dog on the BEACH") == ["a", "dog", "on", "the", "beach"]
    assert tokenizer.tokenize("zebras") == ["zebra", "##s"]
    assert tokenizer.tokenize("日") == ["[UNK]"]
    assert build_offline_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_random_init_is_deterministic_for_a_seed():
    tokenizer = build_offline_tokenizer()
    state = torch.random.get_rng_state()
    first, second = (build_baseline(tiny_config(tokenizer), "resnet18", seed=7) for _ in range(2))
    other = build_baseline(tiny_config(tokenizer), "resnet18", seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.projection.weight, other.projection.weight)
    assert not first.projection.weight.requires_grad


def test_random_variant_full_size_through_registry():
    encoder = load_encoder("baseline:bert-resnet50-random", device="cpu", precision="fp32")
    assert encoder.name == "baseline:bert-resnet50-random"
    assert encoder.projection == PROJECTION == "fixed-seeded (untrained)"
    assert "RANDOM-INIT" in encoder.description and "768->1000" in encoder.description
    config = encoder.model.text_encoder.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    projection = encoder.model.projection
    assert (projection.in_features, projection.out_features) == (768, 1000)
    assert encoder.model.image_encoder.fc.in_features == 2048  # ResNet-50, not a smaller ResNet
    assert encoder.encode_images(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert encoder.encode_texts(CAPTIONS[:2]).shape == (2, 1000)


def test_unknown_variant():
    with pytest.raises(CheckpointError, match="baseline:bert-resnet50-random"):
        load_encoder("baseline:bert-resnet18", device="cpu")


def test_pretrained_offline_error_is_one_line():
    code = ("from clipeval.models.registry import CheckpointError, load_encoder\n"
            "try:\n    load_encoder('baseline:bert-resnet50', device='cpu')\n"
            "except CheckpointError as error:\n    print(error)\n    raise SystemExit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 3, result.stderr[-2000:]
    message = result.stdout.strip()
    assert "\n" not in message and message.startswith("cannot load baseline:bert-resnet50:")
