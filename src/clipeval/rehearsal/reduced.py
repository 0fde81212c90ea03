"""A reduced rehearsal: the rehearsal profile extended again, on a small mirror with small data, for ``make test``
and ``make gpu-check`` (docs/gpu-box.md).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from clipeval.data.benchmarks import BENCHMARKS
from clipeval.data.challenge import build_challenge_set
from clipeval.data.scenes import generate_scenes
from clipeval.models.hub_mirror import spec_repos
from clipeval.paths import PARAMS_DIR
from clipeval.profiles import load_profile
from clipeval.rehearsal.mirror import build_mirror, dataset_builders, folder_builders


def reduced_repos(checkpoints: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """What a reduced rehearsal's mirror holds: the checkpoints', the label study's and the benchmarks' repositories,
    and the plain folders (SugarCrepe's)."""
    rehearsal = load_profile("rehearsal")
    specs = [*checkpoints, *(source["model"] for source in rehearsal["label_sources"].values())]
    repos = [repo for spec in specs for repo in spec_repos(spec)] + [*dataset_builders(), *folder_builders(), *extra]
    return list(dict.fromkeys(repos))


def reduced_rehearsal(root: str | Path, checkpoints: list[str], rows: int = 12, extra_repos: tuple[str, ...] = (),
                      **params) -> Path:
    """Build a reduced rehearsal's mirror and data under the empty folder ``root`` and write its profile; return
    the profile's path.

    Args:
        rows: images per benchmark and test scenes.
        extra_repos: more repositories for the mirror (the labellers, for ``build-evalset``).
        **params: profile values over the reduced ones (``device``, ``precision``, ``notebooks``...).
    """
    root = Path(root)
    mirror = build_mirror(root / "mirror", only=reduced_repos(checkpoints, extra_repos), dataset_rows=rows,
                          progress=False)
    challenge = str(build_challenge_set(root / "challenge"))
    scenes = str(generate_scenes(root / "scenes", n_train=0, n_val=0, n_test=rows))
    profile = root / "reduced.yaml"
    profile.write_text(yaml.safe_dump({
        "extends": str(PARAMS_DIR / "rehearsal.yaml"), "run_dir": str(root / "run"), "hub_mirror": str(mirror),
        "checkpoints": list(checkpoints), "pairs_path": challenge, "retrieval_pairs_path": challenge,
        "search_pairs_path": challenge, "scenes_dir": scenes, "batch_size": 16, "ks": [1], "n_resamples": 50,
        "benchmarks": {name: {"check_size": False} for name in BENCHMARKS},
        "hard_negative_pairs_path": str(Path(scenes) / "pairs_test.csv"),
        "sugarcrepe": {"data_dir": str(mirror / "sugarcrepe" / "data"),
                       "coco_images": str(mirror / "coco" / "val2017")},
        **params}))
    return profile
