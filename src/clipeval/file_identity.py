"""File identity: is a file still the one a record was made from, without trusting its modification time?

A done-marker or a cache entry made from a file records the file's **identity**
(:func:`file_identity`): its stat fingerprint and the SHA-256 of its bytes. Later the file is
checked against it (:func:`matches`):

* **fast path**: the stat fingerprint (size, ``mtime_ns``, ``ctime_ns``, inode, device) is
  unchanged: the same file, nothing read. ``cp -p``, ``rsync -t`` or ``os.utime`` can restore a
  modification time but not the change time (``ctime``, set by the kernel on every write,
  rename or chmod), nor keep the inode of a file replaced by a rename;
* **slow path**: the fingerprint differs but the size is the same: the bytes are hashed again.
  The same content (a file restored, copied or touched) is the same file, and the caller may
  refresh its record with the new fingerprint; other content is another file;
* another size, or a missing file: another file.

So a changed input is never taken for the one recorded, and an identical copy is re-hashed once,
not reprocessed.
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
    """The file's identity now if it is the file ``recorded`` describes, else ``None`` (see the module docstring).

    Args:
        recorded: an earlier :func:`file_identity` (``None`` or one without ``sha256``: never a match).
        path: the file.

    Returns:
        ``recorded`` itself when the stat fingerprint is unchanged; a refreshed identity (new
        fingerprint, same ``sha256``) when only the fingerprint changed and the bytes hash the
        same; ``None`` when the file is missing or its content differs.
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
