"""Adding a checkpoint family takes one module and one line, with no edit to the package (docs/architecture.md)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from clipeval.data.scenes import generate_scenes
from clipeval.data.sources import read_pairs
from clipeval.models.catalogue import describe_checkpoint
from clipeval.models.hub_mirror import mirror_env
from clipeval.models.registry import CHECKPOINT_FAMILIES, checkpoint_family, load_encoder, register_family
from clipeval.rehearsal.mirror import build_mirror
from clipeval.runs.cli import main
from clipeval.train.finetune import finetune
from clipeval.train.options import FinetuneConfig
from toy_family import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def toy_family():
    register_family("toy_family:FAMILY")  # the one line
    yield checkpoint_family("toy")
    CHECKPOINT_FAMILIES.pop("toy")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), n_train=16, n_val=4, n_test=4, image_size=32, seed=2)


def test_a_family_from_outside_the_package_scores(toy_family, scenes, tmp_path):
    spec = toy_family.build_tiny(tmp_path / "toy", 0)
    run = tmp_path / "run"
    assert main(["score", "--pairs", str(scenes / "pairs_test.csv"), "--checkpoint", spec, "--out", str(run),
                 "--device", "cpu", "--no-progress"]) == 0
    results = pd.read_csv(run / "results.csv")
    assert len(results) == len(read_pairs(scenes / "pairs_test.csv")) and (results["status"] == "ok").all()
    assert results["similarity"].between(-1, 1).all() and results["similarity"].nunique() > 1
    assert describe_checkpoint(spec).family == "toy encoder (tests)" and describe_checkpoint(spec).random_init


def test_a_family_from_outside_the_package_fine_tunes_with_its_image_tower_locked(toy_family, scenes, tmp_path):
    base_spec = toy_family.build_tiny(tmp_path / "toy", 0)
    base = load_encoder(base_spec, "cpu", progress=False).model.state_dict()
    config = FinetuneConfig(mode="lit", steps=3, batch_size=8, lr=1e-2, device="cpu", progress=False)
    result = finetune(base_spec, read_pairs(scenes / "pairs_train.csv"), tmp_path / "ft", config)
    tuned = load_encoder(result.spec, "cpu", progress=False).model.state_dict()
    assert result.spec.startswith("toy:")
    assert all(torch.equal(base[name], tuned[name]) for name in base if name.startswith("image_tower."))
    assert not torch.equal(base["text_tower.weight"], tuned["text_tower.weight"])


LOAD_FROM_THE_HUB_CACHE = f"""
from clipeval.models.catalogue import describe_checkpoint
from clipeval.models.hub_mirror import is_mirrored
from clipeval.models.registry import load_encoder, register_family
register_family("toy_family:FAMILY")
spec = "toy:{REPO}"
vectors = load_encoder(spec, "cpu").encode_texts(["a"])
print(is_mirrored(spec), describe_checkpoint(spec).random_init, tuple(vectors.shape))
"""


def _load_offline(mirror):
    """Load ``toy:REPO`` in a fresh process pointed at ``mirror`` (the hub client reads its cache folder at import)."""
    env = {**os.environ, **mirror_env(mirror), "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                                              os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", LOAD_FROM_THE_HUB_CACHE], env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_family_from_outside_the_package_has_its_rehearsal_mirror_entry(toy_family, tmp_path):
    empty = _load_offline(build_mirror(tmp_path / "empty", only=[], progress=False))
    assert empty.returncode != 0 and "LocalEntryNotFoundError" in empty.stderr  # nothing to load offline
    mirrored = _load_offline(build_mirror(tmp_path / "mirror", only=[REPO], progress=False))
    assert mirrored.returncode == 0, mirrored.stderr
    assert mirrored.stdout.split("\n")[-2] == "True True (1, 8)"
