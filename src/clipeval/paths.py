"""Project paths, all derived from the project root (cookiecutter-data-science style).

The root is ``$CLIPEVAL_ROOT``, else the working directory or the nearest folder above it holding ``params/``
and ``notebooks/``; never where the package is installed, so a clone, an editable install and a wheel resolve
it alike (docs/architecture.md, "Library and application").
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The project root (the module docstring says how it is found)."""
    setting = os.environ.get("CLIPEVAL_ROOT")
    if setting:
        return Path(setting).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return here


PROJECT_ROOT = project_root()
DATA_DIR = PROJECT_ROOT / "data"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TINY_CHECKPOINTS_DIR = DATA_DIR / "checkpoints" / "tiny-random"
REHEARSAL_HUB_DIR = DATA_DIR / "rehearsal-hub"
CHALLENGE_DIR = DATA_DIR / "generated" / "challenge"
SCENES_DIR = DATA_DIR / "generated" / "scenes"
DUAL_MODEL_DIR = OUTPUTS_DIR / "offline" / "models" / "dual"
SCENE_CLASSIFIER_DIR = OUTPUTS_DIR / "offline" / "models" / "scene-classifier"


def where(path: str | Path) -> str:
    """Where a path points, for a message saying something is missing there: the absolute path and, for a
    relative one, the folder it was resolved against (the working folder, not the project root):
    ``/home/me/val2017 (relative to the current folder /home/me)``."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return str(given)
    return f"{Path.cwd() / given} (relative to the current folder {Path.cwd()})"


def project_relative(value):
    """``value`` (dicts, lists and tuples walked) with every path string under the project root made relative
    to it: committed or shared files (benchmark results) must not name this machine's checkout."""
    if isinstance(value, dict):
        return {key: project_relative(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(project_relative(item) for item in value)
    if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).is_relative_to(PROJECT_ROOT):
        return Path(value).relative_to(PROJECT_ROOT).as_posix()
    return value

