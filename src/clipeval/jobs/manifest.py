"""``manifest.json``: what produced a run (code, parameters, data, checkpoints, versions)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from clipeval.atomic import write_json
from clipeval.embed.stats import package_versions
from clipeval.models.catalogue import is_random_init
from clipeval.models.hub_mirror import active_mirror
from clipeval.models.registry import is_local_path, parse_spec
from clipeval.paths import PROJECT_ROOT


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The current commit hash (with ``-dirty`` if the tree has changes), or ``None`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def hash_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: str | Path) -> str | None:
    """SHA-256 of a file, or over the sorted files of a folder; ``None`` if nothing is on disk there."""
    path = Path(path).expanduser()
    if path.is_file():
        return hash_file(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}:{hash_file(file)}".encode())
    return digest.hexdigest()


def hash_checkpoint(spec: str) -> str | None:
    """SHA-256 over the weight files of a local checkpoint; ``None`` for hub names."""
    parsed = parse_spec(spec)
    local = parsed.target.split("@", 1)[-1]
    if not is_local_path(local) or not Path(local).expanduser().exists():
        return None
    path = Path(local).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.suffix in {".safetensors", ".bin", ".pt", ".pth"})
    digest = hashlib.sha256()
    for file in files:
        digest.update(hash_file(file).encode())
    return digest.hexdigest() if files else None


def build_manifest(params: dict, checkpoints: list[str], data_files: list[str | Path], seed: int | None) -> dict:
    """Collect the manifest fields for a run (``hub_mirror`` when it ran on the rehearsal mirror)."""
    mirror = active_mirror()
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "params": params,
        "seed": seed,
        "checkpoints": [{"spec": spec, "weights_sha256": hash_checkpoint(spec), "random_init": is_random_init(spec)}
                        for spec in checkpoints],
        "data": [{"path": str(path), "sha256": hash_path(path)} for path in data_files],
        "versions": package_versions(),
        "hub_mirror": None if mirror is None else {"path": os.environ.get("HF_HOME"), "note": mirror["note"]},
    }


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive lock on ``<path>.lock`` (a sidecar file, left in place) inside the block.

    Steps of one run folder may run at once (two notebooks, two CLI commands): each reads,
    changes and writes the manifest under this lock, so none loses another's entry. The lock is
    ``fcntl.flock``: the kernel releases it when its holder exits, killed or not. It needs a file
    system with working locks (a local disk; NFS only with lock support).
    """
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_manifest(path: str | Path, step: str, params: dict, checkpoints: list[str],
                    data_files: list[str | Path], seed: int | None = None, warnings: list[dict] | None = None) -> dict:
    """Record one step of a run (``score``, ``retrieve``...) in the run's ``manifest.json``.

    The manifest keeps one entry per step under ``steps`` (with the step's ``warnings``, the
    records of :func:`clipeval.warn.warn`, when it has any); the top level holds the latest
    git commit and versions. The entry is built first (hashing files takes time), then the
    manifest is read, changed and written under an exclusive lock (:func:`locked`), the write
    atomic: concurrent steps keep every entry, and a step killed at any point leaves valid JSON.
    Returns the whole manifest.
    """
    path = Path(path)
    entry = build_manifest(params, checkpoints, data_files, seed)
    with locked(path):
        manifest = json.loads(path.read_text()) if path.exists() else {"steps": {}}
        manifest.update({key: entry[key] for key in ("created_utc", "git_commit", "versions", "hub_mirror")})
        manifest["steps"][step] = {key: entry[key] for key in ("params", "seed", "checkpoints", "data")}
        if warnings:
            manifest["steps"][step]["warnings"] = warnings
        write_json(path, manifest)
    return manifest
