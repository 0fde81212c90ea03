"""Write repositories into a Hugging Face cache in huggingface_hub's own layout (docs/gpu-box.md), as a real
download would have left them, so that ``HF_HUB_OFFLINE=1`` reads them through the unchanged loading code.

Two details the libraries depend on: a blob's name is its etag (the SHA-256 of a Git LFS file, the Git blob
SHA-1 of a plain one); and a file a library asked for that the repository lacks is recorded as an empty
``.no_exist/<commit>/<path>``, so offline it is known absent rather than not yet downloaded (transformers 5's
``AutoTokenizer`` asks every repository for ``config.json`` and fails offline without one or that record).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

# Files Hugging Face repositories store with Git LFS (the hub's .gitattributes), and anything over 10 MB.
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".model", ".parquet", ".tar",
                ".arrow", ".npz"}
LFS_MIN_BYTES = 10 * 2**20


def repo_folder(hub: str | Path, repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder of a repository: ``<hub>/models--org--name`` (or ``datasets--``)."""
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type is model or dataset, not {repo_type!r}")
    return Path(hub) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _file_hash(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    digest = hashlib.new(algorithm, prefix)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def etag(path: Path) -> str:
    """The hub's etag of a file: SHA-256 for an LFS file, else the Git blob SHA-1."""
    size = path.stat().st_size
    if path.suffix in LFS_SUFFIXES or size >= LFS_MIN_BYTES:
        return _file_hash(path, "sha256")
    return _file_hash(path, "sha1", f"blob {size}\0".encode())


def add_repo(hub: str | Path, repo_id: str, source: str | Path, repo_type: str = "model",
             absent: tuple[str, ...] = ("config.json",)) -> Path:
    """Move every file under ``source`` (a folder a save function wrote; emptied) into the cache as the ``main``
    snapshot of ``repo_id``, replacing a repository already there; returns the snapshot folder.

    The commit hash is derived from the files (paths and etags), so the same files give the same snapshot.
    ``absent``: files the libraries ask for, recorded as absent when ``source`` lacks them.
    """
    source = Path(source)
    files = sorted(path for path in source.rglob("*") if path.is_file())
    if not files:
        raise ValueError(f"{source}: no file to add as {repo_id}")
    tags = {path: etag(path) for path in files}
    commit = hashlib.sha1("".join(f"{path.relative_to(source).as_posix()}\0{tags[path]}\n"
                                  for path in files).encode()).hexdigest()
    folder = repo_folder(hub, repo_id, repo_type)
    shutil.rmtree(folder, ignore_errors=True)
    snapshot = folder / "snapshots" / commit
    for path in files:
        blob = folder / "blobs" / tags[path]
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    for name in absent:
        if not (snapshot / name).exists():
            marker = folder / ".no_exist" / commit / name
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot
