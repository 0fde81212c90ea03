"""Real checkpoints against published numbers (marker ``network``: needs a model hub and the internet).

Run with ``make test-network`` on a machine with network; never in CI. transformers' own CLIP
integration test pins ``openai/clip-vit-base-patch32`` on COCO val2017 image 39769 (two cats on
a couch) with the texts below at ``logits_per_image ≈ [[24.5701, 19.3049]]``; the same weights
through open_clip must give the same logits up to its slightly different resize.
"""

import numpy as np
import pytest

from clipeval.data.fetch import FetchOptions
from clipeval.data.images import read_many_bytes
from clipeval.embed.engine import Embedder, embed_texts
from clipeval.embed.options import EmbedOptions
from clipeval.models.registry import load_encoder

pytestmark = pytest.mark.network

COCO_CATS = "http://images.cocodataset.org/val2017/000000039769.jpg"
TEXTS = ["a photo of a cat", "a photo of a dog"]
PUBLISHED_LOGITS = np.array([24.5701, 19.3049])  # transformers tests/models/clip, test_inference


def _logits(spec: str) -> np.ndarray:
    encoder = load_encoder(spec, device="cpu")
    [raw] = read_many_bytes([COCO_CATS], fetch_options=FetchOptions(image_cache_dir=None))
    assert raw.status == "ok", raw.error
    with Embedder(encoder, EmbedOptions(embedding_cache=False)) as embedder:
        image = embedder.images([raw]).vectors
    texts = embed_texts(encoder, TEXTS).of([0, 1])
    return encoder.logit_scale * (image @ texts.T).numpy()[0]


def test_hf_clip_b32_matches_transformers_integration_test():
    np.testing.assert_allclose(_logits("hf:openai/clip-vit-base-patch32"), PUBLISHED_LOGITS, atol=1e-2)


def test_open_clip_b32_openai_matches_the_same_weights():
    # open_clip resizes with torchvision, transformers with its own PIL path: allow a small gap.
    np.testing.assert_allclose(_logits("open_clip:ViT-B-32@openai"), PUBLISHED_LOGITS, atol=0.3)
