"""The rehearsal hub mirror as the model code sees it: is one active, and what does it hold?

A mirror (built by :mod:`clipeval.rehearsal`) is a folder with two caches the model libraries
read: ``<root>/hf`` (``HF_HOME``: huggingface_hub's cache, ``hub/models--org--name/...``) and
``<root>/torch`` (``TORCH_HOME``: torchvision's ``hub/checkpoints/``). Everything it holds has
random weights under real repository names, so every output made from it must say so: the
catalogue marks a mirrored checkpoint random-init (:func:`mirrored_repos`), the report shows a
banner. ``<root>/hf/clipeval_mirror.json`` (:data:`MIRROR_FILE`) lists what it holds; it is what
tells a mirror from a real cache.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

MIRROR_FILE = "clipeval_mirror.json"
MIRROR_NOTE = "rehearsal: random weights under real names"


def mirror_env(root: str | Path) -> dict[str, str]:
    """The environment that points the model libraries at a mirror, offline.

    ``HF_HOME`` and ``HF_HUB_CACHE`` (huggingface_hub, transformers, open_clip, timm, datasets),
    ``TORCH_HOME`` (torchvision's weight files), and the offline switches, so that nothing
    falls through to the network.
    """
    root = Path(root).resolve()
    return {"HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(root / "hf" / "hub"), "TORCH_HOME": str(root / "torch"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@contextlib.contextmanager
def using_mirror(root: str | Path):
    """Within the block, this process and the processes it starts (notebook kernels) use the mirror, offline.

    Raises:
        FileNotFoundError: ``root`` holds no mirror (build it with ``make rehearsal-hub``).
    """
    marker = Path(root) / "hf" / MIRROR_FILE
    if not marker.is_file():
        raise FileNotFoundError(f"{root}: no rehearsal hub mirror ({marker} is missing); build it with "
                                f"make rehearsal-hub (python -m clipeval rehearsal-hub --out {root})")
    env = mirror_env(root)
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def active_mirror() -> dict | None:
    """The mirror's contents (its :data:`MIRROR_FILE`) when ``HF_HOME`` points at one, else ``None``."""
    home = os.environ.get("HF_HOME")
    marker = Path(home) / MIRROR_FILE if home else None
    if marker is None or not marker.is_file():
        return None
    return json.loads(marker.read_text())


def mirrored_repos() -> set[str]:
    """Hub repositories (``org/name``, models and datasets) and torch weight files the active mirror holds."""
    mirror = active_mirror()
    if mirror is None:
        return set()
    return set(mirror.get("models", [])) | set(mirror.get("datasets", [])) | set(mirror.get("torch_files", []))


def spec_repos(spec: str) -> list[str]:
    """The hub repositories (and torch weight files) a checkpoint spec downloads, as its family resolves them
    (:attr:`~clipeval.models.family.CheckpointFamily.hub_repos`); ``[]`` for local ones."""
    from clipeval.models.registry import checkpoint_family, parse_spec

    parsed = parse_spec(spec)
    return checkpoint_family(parsed.prefix).hub_repos(parsed.target)


def is_mirrored(spec: str) -> bool:
    """True when the active mirror holds every repository ``spec`` downloads (so its weights are random)."""
    held = mirrored_repos()
    if not held:
        return False
    repos = spec_repos(spec)
    return bool(repos) and set(repos) <= held
