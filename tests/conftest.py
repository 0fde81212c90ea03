"""Shared fixtures: tiny random checkpoints and the challenge set, built once per session in tmp."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session", autouse=True)
def embedding_cache_in_tmp(tmp_path_factory):
    """Runs in tests cache embeddings in a session folder, never in the checkout's outputs/."""
    previous = os.environ.get("CLIPEVAL_EMBEDDING_CACHE")
    os.environ["CLIPEVAL_EMBEDDING_CACHE"] = str(tmp_path_factory.mktemp("embedding-cache"))
    yield
    if previous is None:
        os.environ.pop("CLIPEVAL_EMBEDDING_CACHE")
    else:
        os.environ["CLIPEVAL_EMBEDDING_CACHE"] = previous


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine extra OpenMP threads only contend."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_specs(tmp_path_factory) -> dict[str, str]:
    """Specs of tiny random checkpoints saved in the real formats (hf-clip, hf-siglip, open_clip...)."""
    import open_clip

    from clipeval.models.tiny import build_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny-random")
    specs = build_tiny_checkpoints(root)
    open_clip.add_model_config(root / "open_clip_arch")  # makes the tiny arch name known
    return specs


@pytest.fixture(scope="session")
def challenge_csv(tmp_path_factory):
    """The embedded challenge set written to a temporary folder."""
    from clipeval.data.challenge import build_challenge_set

    return build_challenge_set(tmp_path_factory.mktemp("challenge"))
