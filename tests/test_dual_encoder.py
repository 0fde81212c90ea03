"""The dual encoder: attention pooling, end-of-text pooling, loss, tokenizer, save/load, offline."""

import pytest
import torch
from PIL import Image

from clipeval.models.dual import (
    AttentionPool2d,
    DualEncoder,
    DualEncoderConfig,
    build_dual_encoder,
    load_dual_model,
    save_dual,
    spatial_size,
    train_tokenizer,
)
from clipeval.models.registry import CheckpointError, load_encoder
from clipeval.train.dual import contrastive_loss

CPU = torch.device("cpu")
CAPTIONS = ["a red circle", "two blue squares on a white background", 'a green cross and a sign that says "SALE"',
            "a small yellow triangle to the left of a purple square"]
TINY = DualEncoderConfig(embed_dim=16, image_size=32, text_dim=32, text_layers=2, text_heads=2, text_hidden_dim=37,
                         context_length=16, pool_heads=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_dual_encoder(TINY, CAPTIONS)


@pytest.mark.parametrize("spatial, width, heads, out", [(2, 64, 4, 16), (3, 32, 1, 8), (1, 1280, 8, 128)])
def test_attention_pool_shapes(spatial, width, heads, out):
    pool = AttentionPool2d(spatial, width, heads, out)
    assert pool.positional_embedding.shape == (spatial * spatial + 1, width)
    assert pool(torch.randn(5, width, spatial, spatial)).shape == (5, out)


def test_attention_pool_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="pool_heads"):
        AttentionPool2d(2, 30, 4, 8)


def test_spatial_size_follows_efficientnet(tiny):
    trunk = tiny[0].image_trunk.eval()
    assert [spatial_size(s) for s in (32, 64, 96, 224, 100)] == [1, 2, 3, 7, 4]
    with torch.no_grad():
        for size in (32, 64, 100):
            assert trunk(torch.zeros(1, 3, size, size)).shape[-2:] == (spatial_size(size),) * 2


def test_embedding_shapes_and_unit_norm(tiny):
    model, tokenizer = tiny
    encoder = DualEncoder(model, tokenizer, "dual:tiny", CPU)
    batch = torch.stack([encoder.preprocess(Image.new("RGB", (w, h), "red")) for w, h in ((80, 50), (20, 33))])
    assert batch.shape == (2, 3, 32, 32)
    for embeddings, n in ((encoder.encode_images(batch), 2), (encoder.encode_texts(CAPTIONS), 4)):
        assert embeddings.shape == (n, 16) and embeddings.dtype == torch.float32
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(n))


def test_text_keeps_the_end_of_text_token_so_padding_does_not_matter(tiny):
    model, tokenizer = tiny
    encoder = DualEncoder(model, tokenizer, "dual:tiny", CPU)
    alone = encoder.encode_texts(["a red circle"])
    padded = encoder.encode_texts(["a red circle", CAPTIONS[-1]])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)
    tokens = encoder.tokenize(["a red circle", CAPTIONS[-1]])
    assert tokens["input_ids"][0, tokens["attention_mask"][0].sum() - 1] == tokenizer.sep_token_id


def test_truncation_is_counted(tiny):
    _, tokenizer = tiny
    encoder = DualEncoder(tiny[0], tokenizer, "dual:tiny", CPU)
    assert encoder.truncated([*CAPTIONS, "a red circle " * 10]).count(True) == 1
    assert encoder.encode_texts(["a red circle " * 10]).shape == (1, 16)


def test_contrastive_loss_is_symmetric_cross_entropy():
    identity = torch.eye(4)
    low = contrastive_loss(identity, identity, torch.tensor(100.0))
    high = contrastive_loss(identity, identity.roll(1, 0), torch.tensor(100.0))
    assert low < 1e-3 and high > 10
    images, texts = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1)
    torch.testing.assert_close(contrastive_loss(images, texts, torch.tensor(3.0)),
                               contrastive_loss(texts, images, torch.tensor(3.0)))


def test_hard_negatives_join_only_the_image_to_text_side():
    generator = torch.Generator().manual_seed(0)
    images, texts, negatives = torch.nn.functional.normalize(torch.randn(3, 4, 8, generator=generator), dim=-1)
    scale = torch.tensor(5.0)
    labels = torch.arange(4)
    expected = (torch.nn.functional.cross_entropy(scale * images @ torch.cat([texts, negatives]).T, labels)
                + torch.nn.functional.cross_entropy(scale * texts @ images.T, labels)) / 2
    torch.testing.assert_close(contrastive_loss(images, texts, scale, negatives), expected)
    # a negative that copies its image's caption makes that image's choice a coin toss
    assert contrastive_loss(images, texts, scale, texts) > contrastive_loss(images, texts, scale)
    # negatives far from every image change nothing
    sharp = torch.tensor(50.0)
    torch.testing.assert_close(contrastive_loss(torch.eye(4), torch.eye(4), sharp, -torch.eye(4)[:2]),
                               contrastive_loss(torch.eye(4), torch.eye(4), sharp), atol=1e-6, rtol=0)


def test_logit_scale_is_clamped_at_100(tiny):
    model, _ = tiny
    assert abs(model.temperature().item() - 1 / 0.07) < 1e-3
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.temperature().item() == pytest.approx(100.0)
    with torch.no_grad():
        model.logit_scale.fill_(torch.log(torch.tensor(1 / 0.07)).item())


def test_tokenizer_is_deterministic_and_handles_unknown_words():
    first, second = train_tokenizer(CAPTIONS * 3), train_tokenizer(CAPTIONS * 3)
    assert first.get_vocab() == second.get_vocab()
    tokens = first.convert_ids_to_tokens(first("A Zebra")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens and len(tokens) > 4


def test_save_load_round_trip_through_the_registry(tiny, tmp_path):
    model, tokenizer = tiny
    folder = save_dual(model, tokenizer, tmp_path / "dual", history={"epochs": []})
    assert {"config.json", "model.safetensors", "tokenizer.json", "history.json"} <= {p.name for p in folder.iterdir()}
    original = DualEncoder(model, tokenizer, "dual:tiny", CPU)
    loaded = load_encoder(f"dual:{folder}", device="cpu")
    assert isinstance(loaded, DualEncoder) and loaded.name == f"dual:{folder}"
    assert loaded.context_length == 16 and loaded.logit_scale == pytest.approx(1 / 0.07)
    image = Image.new("RGB", (40, 30), (30, 70, 230))
    batch = torch.stack([original.preprocess(image)])
    torch.testing.assert_close(loaded.preprocess(image), batch[0], rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_images(batch), original.encode_images(batch), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_texts(CAPTIONS), original.encode_texts(CAPTIONS), rtol=0, atol=0)
    save_dual(load_dual_model(folder)[0], tokenizer, folder)  # overwriting an existing folder works
    assert not list(tmp_path.glob(".dual.*"))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=rf"no such folder {tmp_path / 'nothing'}; train a model there first"):
        load_encoder(f"dual:{tmp_path / 'nothing'}", device="cpu")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CheckpointError, match=r"missing config\.json, model\.safetensors in "):
        load_encoder(f"dual:{tmp_path / 'nothing'}", device="cpu")


def test_pretrained_flag_offline_raises_the_offline_error():
    with pytest.raises(CheckpointError, match=r"distilbert-base-uncased.*offline"):
        build_dual_encoder(DualEncoderConfig(pretrained=True))


def test_random_init_residual_blocks_start_as_identity(tiny):
    from torchvision.models.efficientnet import MBConv

    blocks = [m for m in tiny[0].image_trunk.modules() if isinstance(m, MBConv) and m.use_res_connect]
    assert len(blocks) == 9
    block = blocks[0].eval()
    x = torch.randn(2, block.block[-1][0].out_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    assert tiny[0].text_model.config.initializer_range == TINY.text_init_std
