"""Profiles: one YAML of notebook parameters per way of running the project (``params/<profile>.yaml``).

A profile may extend another (``extends: paper``): it then holds only what differs (see
:func:`load_profile`), the way the rehearsal (``params/rehearsal.yaml``) is the paper profile
on the hub mirror with smaller data.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from clipeval.paths import PARAMS_DIR


def load_profile(profile: str | Path, checkpoints: list[str] | None = None) -> dict:
    """Read a profile's YAML (a name in ``params/`` or a path); ``checkpoints`` overrides its list.

    A profile may extend another (``extends: paper``, a name or a path relative to the file): it
    then holds only what differs, merged over the other's values (mappings key by key, other
    values replaced), so an override can never drift from what it extends.

    Raises:
        FileNotFoundError: no such profile (or profile it extends).
        ValueError: profiles that extend each other in a loop, or a profile that is no mapping.
    """
    params = _read_profile(profile, seen=())
    if checkpoints:
        params["checkpoints"] = list(checkpoints)
    return params


def _profile_path(profile: str | Path, relative_to: Path = PARAMS_DIR) -> Path:
    path = Path(profile)
    if not path.suffix:
        return PARAMS_DIR / f"{profile}.yaml"
    return path if path.is_absolute() or path.is_file() else relative_to / path


def _read_profile(profile: str | Path, seen: tuple[Path, ...], relative_to: Path = PARAMS_DIR) -> dict:
    path = _profile_path(profile, relative_to)
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no profile {profile!r} ({path}); available: {available}")
    if path.resolve() in seen:
        raise ValueError(f"profiles extend each other in a loop: {' -> '.join(map(str, (*seen, path.resolve())))}")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: a profile is a mapping of parameter names to values")
    base = params.pop("extends", None)
    if base is None:
        return params
    return merge_profiles(_read_profile(base, (*seen, path.resolve()), path.parent), params)


def merge_profiles(base: dict, override: dict) -> dict:
    """``override`` over ``base``: mappings merged key by key (recursively), any other value replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (merge_profiles(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict)
                       else value)
    return merged
