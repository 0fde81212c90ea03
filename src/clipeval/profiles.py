"""Profiles: one YAML of notebook parameters per way of running the project (``params/<profile>.yaml``), which
may extend another and hold only what differs; docs/notebooks.md ("Profile keys") lists every key and the checks.
"""

from __future__ import annotations

import ast
import difflib
import json
from pathlib import Path

import yaml

from clipeval.paths import NOTEBOOKS_DIR, PARAMS_DIR

# Profile keys for the run itself, not for a notebook: the run folder, the notebooks to run (both
# required) and the hub mirror to run them on.
RUN_KEYS = {"run_dir": "", "notebooks": [""], "hub_mirror": ""}
REQUIRED_KEYS = {"run_dir": "the run folder, e.g. outputs/my-run",
                 "notebooks": "the notebooks to run, e.g. [02_score_pairs, 03_score_histograms]"}


def load_profile(profile: str | Path, checkpoints: list[str] | None = None) -> dict:
    """Read a profile's YAML (a name in ``params/`` or a path); ``checkpoints`` overrides its list.

    ``extends`` (a name, or a path relative to the file) is merged under it (:func:`merge_profiles`), so an
    override can never drift from what it extends.

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


def notebook_defaults(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, dict[str, object]]:
    """Each notebook's parameters and their defaults, read from its tagged ``parameters`` cell (flat literals)."""
    defaults = {}
    for path in sorted(Path(notebooks_dir).glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = next(("".join(cell["source"]) for cell in cells
                       if "parameters" in cell.get("metadata", {}).get("tags", [])), "")
        defaults[path.stem] = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
                               if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    return defaults


def profile_keys(defaults: dict[str, dict[str, object]] | None = None) -> dict[str, tuple[object, str]]:
    """Every key a profile may hold: its default and where it is declared (``the run`` or ``notebook NN_name``)."""
    known: dict[str, tuple[object, str]] = {key: (value, "the run") for key, value in RUN_KEYS.items()}
    for notebook, parameters in (notebook_defaults() if defaults is None else defaults).items():
        for key, value in parameters.items():
            known.setdefault(key, (value, f"notebook {notebook}"))
    return known


def _kind(value) -> str:
    """A value's kind in a profile's words: ``a number``, ``a whole number``, ``text``, ``a list``..."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "empty" if value is None else type(value).__name__


_PLURAL = {"true or false": "true/false values", "a whole number": "whole numbers", "a number": "numbers",
           "text": "text", "a list": "lists", "a mapping": "mappings"}


def _fits(value, default) -> bool:
    """Whether a profile's value has the kind of the notebooks' default (a whole number fits a number)."""
    if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, int | float):
        return True
    if _kind(value) != _kind(default):
        return False
    if isinstance(default, list) and default:
        return all(_fits(item, default[0]) for item in value)
    return True


def check_profile(params: dict, notebooks_dir: Path = NOTEBOOKS_DIR, name: str = "the profile") -> None:
    """Refuse a profile the notebooks cannot run: every problem in one message.

    Raises:
        ValueError: an unknown key (with the nearest known one), a value of another kind than the
            notebooks' default (``checkpoints: hf:x`` where a list goes), a missing required key
            (:data:`REQUIRED_KEYS`), or a notebook name that does not exist.
    """
    defaults = notebook_defaults(notebooks_dir)
    known = profile_keys(defaults)
    problems = [f"missing required key {key!r} ({REQUIRED_KEYS[key]})" for key in REQUIRED_KEYS if key not in params]
    for key, value in params.items():
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            problems.append(f"unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else
                                                      " (docs/notebooks.md lists every key)"))
        elif not _fits(value, known[key][0]):
            default, where = known[key]
            problems.append(f"{key!r} must be {_kind(default)}"
                            + (f" of {_PLURAL[_kind(default[0])]}" if isinstance(default, list) and default else "")
                            + f" (as in {where}: {default!r}), got {_kind(value)}: {value!r}")
    for notebook in params.get("notebooks", []) if isinstance(params.get("notebooks"), list) else []:
        if notebook not in defaults:
            near = difflib.get_close_matches(str(notebook), list(defaults), n=1)
            problems.append(f"no notebook {notebook!r}" + (f" (did you mean {near[0]!r}?)" if near else
                                                           f"; known: {', '.join(defaults)}"))
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
