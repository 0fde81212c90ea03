"""File identity: is a file still the one a record was made from, without trusting its modification time?

A record holds the file's stat fingerprint and SHA-256 (:func:`file_identity`); :func:`matches` trusts an
unchanged fingerprint (nothing read) and otherwise, at the same size, hashes the bytes again. The fingerprint
includes ``ctime`` and the inode because ``cp -p``, ``rsync -t`` or ``os.utime`` can restore a modification
time but not the change time, nor keep the inode of a file replaced by a rename. So a changed input is never
taken for the one recorded, and an identical copy is re-hashed once, not reprocessed (docs/sharded-runs.md,
"The resume rule").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")
_BLOCK = 1 << 20


def stat_fingerprint(path: str | Path) -> dict:
    """The file's size, modification and change times (ns), inode and device.

    Raises:
        OSError: the file cannot be stat'ed (missing...).
    """
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino, "device": stat.st_dev}


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | Path) -> dict:
    """The record to keep of a file: its stat fingerprint (taken before reading) and ``sha256``.

    The fingerprint is taken first: a file written while it is hashed gets a newer change time
    than the one recorded, so the next check re-hashes it (and sees other content).

    Raises:
        OSError: the file cannot be read.
    """
    fingerprint = stat_fingerprint(path)
    return {**fingerprint, "sha256": sha256_file(path)}


def matches(recorded: dict | None, path: str | Path) -> dict | None:
    """The file's identity now if it is the file ``recorded`` describes (an earlier :func:`file_identity`), else
    ``None``.

    Returns:
        ``recorded`` itself when the stat fingerprint is unchanged; a refreshed identity (new fingerprint, same
        ``sha256``) when only the fingerprint moved; ``None`` when the file is missing, its content differs or
        ``recorded`` is ``None`` or has no ``sha256``.
    """
    if not recorded or "sha256" not in recorded:
        return None
    try:
        now = stat_fingerprint(path)
    except OSError:
        return None
    if all(recorded.get(field) == now[field] for field in STAT_FIELDS):
        return recorded
    if recorded.get("size") != now["size"]:
        return None
    try:
        digest = sha256_file(path)
    except OSError:
        return None
    return {**now, "sha256": digest} if digest == recorded["sha256"] else None


def content_identity(paths: list[str | Path], root: str | Path | None = None) -> list[list]:
    """Each file's name (relative to ``root`` when given), size and SHA-256: an identity no stat field enters."""
    rows = []
    for path in paths:
        path = Path(path)
        name = str(path.relative_to(root)) if root is not None else str(path.resolve())
        rows.append([name, path.stat().st_size, sha256_file(path)])
    return rows
