"""The torchvision decoder (``--decoder torchvision``), here on the CPU: the same code decodes with nvJPEG on CUDA."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.options import MAX_PIXELS
from clipeval.embed.device_decode import decode_on_device, is_plain_jpeg
from clipeval.embed.engine import Embedder, _decode_batch
from clipeval.embed.options import EmbedOptions
from clipeval.models.registry import load_encoder
from clipeval.runs.cli import main

TOLERANCE = 0.05  # docs/speed.md: the largest move of a normalised input value the decode paths may make


def _photo(width: int, height: int, mode: str = "RGB", seed: int = 0, **save) -> bytes:
    """A smooth JPEG with some grain, as a photo compresses."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8))
    grain = rng.normal(0, 8, (height, width, 3))
    pixels = np.asarray(coarse.resize((width, height), Image.BICUBIC)).astype(float) + grain
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _blocks() -> bytes:
    """Sharp black-and-white edges: a bicubic reduction overshoots there (torchvision's one-pass resize moved
    Pillow's tensor by 0.20 on this image)."""
    cells = (np.random.default_rng(4).random((15, 20)) > 0.5).astype(np.uint8) * 255
    blocks = np.kron(cells, np.ones((8, 8), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(np.stack([blocks, 255 - blocks, blocks], axis=-1)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return _photo(80, 60, exif=exif.tobytes())


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _corrupt_inside() -> bytes:
    """Header and end marker intact, entropy-coded data overwritten: it looks plain and fails to decode."""
    data = bytearray(_photo(64, 48, seed=3))
    start = data.index(b"\xff\xda") + 20
    data[start:start + 200] = b"\xff\x01" * 100
    return bytes(data)


PLAIN = {"landscape": _photo(160, 120), "portrait": _photo(96, 128, seed=1), "grey": _photo(120, 90, "L", seed=2),
         "edges": _blocks()}
OTHER = {"png": _png(), "cmyk": _photo(64, 48, "CMYK"), "rotated": _rotated(), "truncated": _photo(160, 120)[:-400],
         "empty": b"", "not an image": b"hello", "corrupt inside": _corrupt_inside()}


def test_only_plain_jpegs_take_the_device_path():
    assert all(is_plain_jpeg(data, MAX_PIXELS) for data in PLAIN.values())
    plain = {name for name, data in OTHER.items() if is_plain_jpeg(data, MAX_PIXELS)}
    assert plain == {"corrupt inside"}  # only decoding finds it out (it then goes through Pillow, next test)
    assert not is_plain_jpeg(PLAIN["landscape"], max_pixels=160 * 120 - 1)  # over the cap: Pillow says so


@pytest.mark.parametrize("kind", ["hf-clip", "hf-siglip", "open_clip"])
def test_statuses_equal_pillows_and_pixels_stay_within_the_tolerance(tiny_specs, kind):
    encoder = load_encoder(tiny_specs[kind], device="cpu")
    datas = [*PLAIN.values(), *OTHER.values()]
    exact, exact_outcomes = _decode_batch(datas, encoder.preprocess, None, MAX_PIXELS)
    pixels, outcomes = decode_on_device(datas, encoder, MAX_PIXELS)
    assert outcomes == exact_outcomes
    names = [name for name, (status, _) in zip([*PLAIN, *OTHER], outcomes) if status == "ok"]
    assert names == [*PLAIN, "png", "cmyk", "rotated", "corrupt inside"]  # Pillow decodes the last with a warning
    difference = dict(zip(names, (pixels - torch.from_numpy(exact)).abs().amax(dim=(1, 2, 3)).tolist()))
    assert max(difference[name] for name in PLAIN) <= TOLERANCE, difference
    assert [difference[name] for name in ("png", "cmyk", "rotated")] == [0, 0, 0]  # through Pillow: its tensors
    if kind.startswith("hf"):  # transformers' processor runs the same tensor code for both: identical
        assert max(difference[name] for name in PLAIN) == 0


def test_a_transform_step_with_no_tensor_equivalent_is_named(tiny_specs):
    from torchvision import transforms

    encoder = load_encoder(tiny_specs["open_clip"], device="cpu")
    encoder.transform = transforms.Compose([*encoder.transform.transforms, transforms.ColorJitter(0.1)])
    with pytest.raises(ValueError, match=r"ColorJitter.*use --decoder pillow"):
        decode_on_device([PLAIN["landscape"]], encoder, MAX_PIXELS)


def test_the_embedder_caches_torchvision_vectors_apart_from_pillows(tiny_specs, tmp_path):
    encoder = load_encoder(tiny_specs["open_clip"], device="cpu")
    raws_bytes = [*PLAIN.values(), OTHER["png"], OTHER["truncated"]]
    from clipeval.data.images import read_image_bytes

    raws = [read_image_bytes(data) for data in raws_bytes]
    results = {}
    for decoder in ("pillow", "torchvision"):
        options = EmbedOptions(device="cpu", decoder=decoder, embedding_cache_dir=str(tmp_path), progress=False)
        with Embedder(encoder, options) as embedder:
            results[decoder] = embedder.images(raws)
            assert embedder.cache_counts()["image_misses"] == len(PLAIN) + 2  # nothing reused across decoders
            assert embedder.decode_processes == 0
    pillow, device = results["pillow"], results["torchvision"]
    assert pillow.errors == device.errors and pillow.errors[len(PLAIN) + 1][0] == "truncated"
    np.testing.assert_array_equal(pillow.rows, device.rows)
    similarity = (pillow.vectors * device.vectors).sum(dim=1)
    assert similarity.min() > 0.99


def test_the_command_line_scores_with_the_torchvision_decoder(tiny_specs, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in {**PLAIN, "png": OTHER["png"], "truncated": OTHER["truncated"]}.items():
        (folder / f"{name}.jpg").write_bytes(data)
    pairs = pd.DataFrame({"image": [f"{name}.jpg" for name in [*PLAIN, "png", "truncated"]],
                          "caption": ["a photo"] * (len(PLAIN) + 2)})
    pairs.to_csv(folder / "pairs.csv", index=False)
    scores = {}
    for decoder in ("pillow", "torchvision"):
        out = tmp_path / decoder
        assert main(["score", "--pairs", str(folder / "pairs.csv"), "--checkpoint", tiny_specs["hf-clip"], "--out",
                     str(out), "--device", "cpu", "--no-progress", "--no-embedding-cache", "--decoder", decoder]) == 0
        scores[decoder] = pd.read_csv(out / "results.csv")
    assert scores["pillow"]["status"].tolist() == scores["torchvision"]["status"].tolist()
    assert scores["torchvision"]["status"].tolist().count("ok") == len(PLAIN) + 1
    columns = [column for column in scores["pillow"].columns if column.startswith("similarity")]
    pd.testing.assert_frame_equal(scores["pillow"][columns], scores["torchvision"][columns])  # hf: identical pixels
    assert '"decoder": "torchvision"' in (tmp_path / "torchvision" / "stats.json").read_text()


@pytest.mark.parametrize("flag", ["--fast-decode", "--decode-processes=1"])
def test_the_torchvision_decoder_refuses_pillows_options(tiny_specs, tmp_path, capsys, flag):
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"image": ["a.jpg"], "caption": ["a"]}).to_csv(pairs, index=False)
    assert main(["score", "--pairs", str(pairs), "--checkpoint", tiny_specs["hf-clip"], "--out", str(tmp_path / "run"),
                 "--decoder", "torchvision", flag]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "torchvision decoder" in error and "Traceback" not in error


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29's image decoders (docs/speed.md)
@pytest.mark.parametrize("resize", [dict(size=32), dict(size=(20, 30)), dict(size=40, max_size=45),
                                    dict(size=32, interpolation="bilinear"), dict(size=300)])
def test_the_tensor_resize_is_pillows_within_one_level(resize):
    from torchvision import transforms
    from torchvision.io import decode_jpeg

    from clipeval.models.encoder import _resize_like_pillow

    mode = transforms.InterpolationMode(resize.pop("interpolation", "bicubic"))
    step = transforms.Resize(interpolation=mode, **resize)
    for data in (PLAIN["edges"], PLAIN["portrait"]):
        pillow = torch.from_numpy(np.array(step(Image.open(io.BytesIO(data)).convert("RGB")))).permute(2, 0, 1)
        tensor = _resize_like_pillow(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)), step)
        assert tensor.shape == pillow.shape
        assert (tensor.int() - pillow.int()).abs().max() <= 1
