"""Project paths, all derived from the repository root (cookiecutter-data-science style)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_ROOT / "data"
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
PARAMS_DIR = PROJECT_ROOT / "params"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TINY_CHECKPOINTS_DIR = DATA_DIR / "checkpoints" / "tiny-random"


def run_dir(profile: str) -> Path:
    """Return the run folder of a profile: ``outputs/<profile>/``."""
    return OUTPUTS_DIR / profile
