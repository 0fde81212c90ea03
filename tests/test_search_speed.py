"""A search loads only what its query needs, and ranks exactly as the whole model does: a text query by the family's
text-only load (the dual encoder builds no EfficientNet), an image query by the whole model, a similar-item query
by no model at all; the same hits and the same scores, bit for bit, as the whole model's embeddings give."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipeval.data.images import read_image_bytes
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.finder.index import build_index
from clipeval.finder.search import FinderIndex, run_query
from clipeval.models.dual import build_tiny_dual
from clipeval.models.registry import checkpoint_family, load_encoder
from fresh_process import imports_after
from test_finder_index import write_collection

EMBED = EmbedOptions(device="cpu", progress=False)
TEXT = "picture 2: animals/noise.png"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dual(tmp_path_factory) -> str:
    return build_tiny_dual(tmp_path_factory.mktemp("dual") / "dual", seed=0)


@pytest.fixture(scope="module")
def specs(dual, tiny_specs) -> list[str]:
    return [dual, tiny_specs["hf-clip"]]  # a family with a text-only load, and one without (the whole model)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return write_collection(tmp_path_factory.mktemp("search-speed") / "collection", extra=6)


@pytest.fixture(scope="module")
def folder(collection, specs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search-speed-index")
    build_index(collection, specs, out, embed=EMBED)
    return out


def whole_model_vector(spec: str, text: str | None = None, image: Path | None = None) -> np.ndarray:
    """A query's vector as every search computed it before text-only loads: the whole model, through the engine."""
    options = EmbedOptions(device="cpu", progress=False, embedding_cache=False, batch_size=1)
    with Embedder(LazyEncoder(spec, options), options) as embedder:
        assert not embedder.encoder.text_only
        if text is not None:
            return embedder.texts([text]).vectors[0].numpy().astype(np.float32)
        return embedder.images([read_image_bytes(image, None)]).vectors[0].numpy().astype(np.float32)


def hits_of(result: dict) -> list[tuple[str, float]]:
    [block] = result["checkpoints"]
    return [(hit["id"], hit["score"]) for hit in block["hits"]]


def test_a_text_query_ranks_exactly_as_the_whole_model(folder, specs):
    index = FinderIndex.open(folder, EMBED)
    for spec in specs:
        expected = index.search_vector(whole_model_vector(spec, text=TEXT), spec, k=6)
        result = run_query(index, text=TEXT, checkpoints=[spec], k=6)
        assert hits_of(result) == [(hit.id, hit.score) for hit in expected]
        loaded = index._vectors(spec)
        text_only = checkpoint_family(spec.partition(":")[0]).load_text is not None
        assert (loaded.text_embedder is not None, loaded.embedder is not None) == (text_only, not text_only)
    dual_model = index._vectors(specs[0]).text_embedder.encoder.model
    assert not hasattr(dual_model, "image_trunk") and not hasattr(dual_model, "image_pool")


def test_image_and_similar_queries_rank_as_before_and_a_text_query_after_an_image_one_agrees(folder, collection,
                                                                                              specs):
    index = FinderIndex.open(folder, EMBED)
    image = collection / "wide.jpg"
    for spec in specs:
        texts_first = hits_of(run_query(index, text=TEXT, checkpoints=[spec], k=6))
        expected = index.search_vector(whole_model_vector(spec, image=image), spec, k=6)
        assert hits_of(run_query(index, image=image, checkpoints=[spec], k=6)) == \
            [(hit.id, hit.score) for hit in expected]
        loaded = index._vectors(spec)
        assert loaded.embedder is not None and loaded.text_embedder is None  # the whole model serves both now
        assert hits_of(run_query(index, text=TEXT, checkpoints=[spec], k=6)) == texts_first

        vectors, positions = index.vectors(spec)
        row = 2
        item = index.items["id"].iloc[positions[row]]
        stored = index.search_vector(np.asarray(vectors[row], dtype=np.float32), spec, k=4,
                                     exclude=int(positions[row]))
        assert hits_of(run_query(index, similar=item, checkpoints=[spec], k=4)) == \
            [(hit.id, hit.score) for hit in stored]


def test_a_text_only_encoder_refuses_what_needs_the_whole_model(dual):
    whole, text = load_encoder(dual, "cpu", "fp32", progress=False), \
        load_encoder(dual, "cpu", "fp32", progress=False, text_only=True)
    assert text.text_only and not whole.text_only
    assert np.array_equal(text.encode_texts([TEXT]).numpy(), whole.encode_texts([TEXT]).numpy())
    pixels = whole.preprocess(Image.new("RGB", (40, 40), (128, 128, 128))).unsqueeze(0)
    for refused in (lambda: text.encode_images(pixels), text.weights_digest):
        with pytest.raises(RuntimeError, match="loaded for texts only"):
            refused()


def test_a_changed_dual_checkpoint_is_hashed_whole_and_refused(tmp_path, collection):
    model = Path(build_tiny_dual(tmp_path / "model", seed=0).removeprefix("dual:"))
    spec = f"dual:{model}"
    build_index(collection, [spec], tmp_path / "index", embed=EMBED)
    shutil.rmtree(model)
    build_tiny_dual(model, seed=1)  # other weights under the same spec: its files' fingerprint moves
    with pytest.raises(ValueError, match="other weights than the index was built with"):
        FinderIndex.open(tmp_path / "index", EMBED).search_text(TEXT)


def test_a_similar_query_imports_neither_the_embedding_engine_nor_a_model_library(folder):
    item = FinderIndex.open(folder, EMBED).items["id"].iloc[0]
    heavy = ("clipeval.embed.engine", "transformers", "torchvision", "open_clip")
    assert imports_after(["search", str(folder), "--similar", item, "--k", "2"], heavy) == []
