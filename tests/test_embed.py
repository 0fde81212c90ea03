"""The one embedding path: deduplication, skipped inputs, preprocess failures, and that nothing else encodes."""

import ast

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipeval.data.images import read_many_bytes
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.embed.engine import Embedder, embed_set, embed_texts, encode_pixels
from clipeval.embed.options import EmbedOptions
from clipeval.models.registry import load_encoder
from clipeval.paths import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tiny_specs):
    return load_encoder(tiny_specs["hf-clip"], device="cpu")


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def _files(folder, images: list[Image.Image]) -> list[str]:
    """The images saved as PNG files (lossless: decoding them gives the same pixels)."""
    paths = []
    for number, image in enumerate(images):
        image.save(folder / f"{number}.png")
        paths.append(str(folder / f"{number}.png"))
    return paths


def _embed(encoder, paths, batch_size=2):
    raws = [raw if path is not None else None for path, raw in zip(paths, read_many_bytes(
        [path or "" for path in paths]), strict=True)]
    with Embedder(encoder, EmbedOptions(batch_size=batch_size, embedding_cache=False)) as embedder:
        return embedder.images(raws)


def test_duplicates_are_encoded_once_and_equal_encoding_each(encoder, tmp_path):
    images = _images(3)
    files = _files(tmp_path, images)
    inputs = [images[0], images[1], images[0], images[2], images[1]]
    embedded = _embed(encoder, [files[0], files[1], files[0], files[2], files[1]])
    assert embedded.vectors.shape[0] == 3 and embedded.rows.tolist() == [0, 1, 0, 2, 1]
    each = encode_pixels(encoder, torch.stack([encoder.preprocess(image) for image in inputs]), batch_size=1)
    torch.testing.assert_close(embedded.of(range(5)), each, rtol=1e-5, atol=1e-6)
    texts = embed_texts(encoder, ["a cat", "a dog", "a cat", None])
    assert texts.vectors.shape[0] == 2 and texts.rows.tolist() == [0, 1, 0, -1]
    torch.testing.assert_close(texts.of([0, 1, 2]), encoder.encode_texts(["a cat", "a dog", "a cat"]),
                               rtol=1e-5, atol=1e-6)


class Picky:
    """An encoder whose transform rejects 7-pixel-wide images, as real transforms reject odd sizes."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def preprocess_id(self):  # another transform: its vectors must not share the inner model's cache entries
        return self.inner.preprocess_id() + " | rejects width 7"

    def preprocess(self, image):
        if image.width == 7:
            raise ValueError("width 7 is not supported")
        return self.inner.preprocess(image)


def test_skipped_and_rejected_images_get_no_embedding(encoder, tmp_path):
    good, odd = _files(tmp_path, [_images(1)[0], Image.new("RGB", (7, 30))])
    embedded = _embed(Picky(encoder), [good, None, odd, odd])
    assert embedded.rows.tolist() == [0, -1, -1, -1]
    assert set(embedded.errors) == {2, 3} and embedded.errors[2][0] == "preprocess_error"
    assert "width 7" in embedded.errors[2][1]
    with pytest.raises(ValueError, match="has none"):
        embedded.of([1])


def test_retrieval_set_reports_preprocess_failures(encoder, tmp_path):
    for name, size in (("good.png", (40, 40)), ("thin.png", (7, 30))):
        Image.new("RGB", size, (200, 10, 10)).save(tmp_path / name)
    dataset = RetrievalSet("t", pd.DataFrame({"text": ["red", "blue"]}),
                           pd.DataFrame({"image": ["good.png", "thin.png", "absent.png"]}),
                           np.array([[0, 0], [1, 1]]), str(tmp_path))
    embedded = embed_set(Picky(encoder), dataset, EmbedOptions(progress=False))
    assert embedded.image_status == ["ok", "preprocess_error", "missing"]
    assert "width 7" in embedded.image_error[1]
    assert embedded.image_positions.tolist() == [0] and embedded.images.shape[0] == 1
    assert embedded.texts.shape[0] == 2


def test_no_module_outside_embed_encodes_images_or_captions():
    """Only the embedding engine calls an encoder's preprocess / encode methods (models define them)."""
    calls = {"preprocess", "encode_images", "encode_texts"}
    offenders = []
    for path in sorted((PROJECT_ROOT / "src" / "clipeval").rglob("*.py")):
        relative = path.relative_to(PROJECT_ROOT / "src" / "clipeval").as_posix()
        if relative == "embed/engine.py" or relative.startswith("models/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls:
                offenders.append(f"{relative}:{node.lineno} {node.func.attr}")
    assert not offenders, offenders
