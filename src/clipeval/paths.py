"""Project paths, all derived from the repository root (cookiecutter-data-science style)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_ROOT / "data"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TINY_CHECKPOINTS_DIR = DATA_DIR / "checkpoints" / "tiny-random"
REHEARSAL_HUB_DIR = DATA_DIR / "rehearsal-hub"


def project_relative(value):
    """``value`` with every path string under the project root made relative to it (recursively).

    For files that are committed or shared (benchmark results): they must not name this
    machine's checkout. Dicts, lists and tuples are walked; other values are returned as they are.
    """
    if isinstance(value, dict):
        return {key: project_relative(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(project_relative(item) for item in value)
    if isinstance(value, (str, Path)) and Path(value).is_absolute() and Path(value).is_relative_to(PROJECT_ROOT):
        return Path(value).relative_to(PROJECT_ROOT).as_posix()
    return value


def run_dir(profile: str) -> Path:
    """Return the run folder of a profile: ``outputs/<profile>/``."""
    return OUTPUTS_DIR / profile
