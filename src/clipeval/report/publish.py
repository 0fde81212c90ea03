"""The report is replaced in one step: ``<run_dir>/report`` is a symbolic link to a complete build in
``<run_dir>/report.versions/``, swapped atomically (docs/report.md)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

VERSIONS = ".versions"  # <run_dir>/report.versions/ holds the builds <run_dir>/report links to


def report_versions(link: Path) -> Path:
    """The folder holding the report's builds (``report.versions`` beside the ``report`` link)."""
    return link.with_name(link.name + VERSIONS)


@contextlib.contextmanager
def build_lock(folder: Path):
    """Hold an exclusive lock on ``folder`` (flock) so two rebuilds never delete each other's build."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): rebuilds of one run folder must not overlap
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # libc's, from the process
    if renameat2 is None:  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}:  # kernel or file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_report(link: Path, version: Path) -> None:
    """Point ``link`` at the complete build ``version`` in one step (docs/report.md, "Layout and atomic rebuilds").

    A temporary link renamed over ``link`` (one ``rename(2)``), so a reader or a crash finds the old target or
    the new one. A real folder at ``link`` (a report from before the versioned layout) is exchanged with the
    new link, or moved aside first where the system cannot exchange; either way it is left beside the link as
    ``.report.*`` for :func:`remove_leftovers`, so nothing after the swap can fail it.
    """
    temp = link.with_name(f".{link.name}.{os.getpid()}.{os.urandom(4).hex()}.link")
    os.symlink(os.path.relpath(version, link.parent), temp)
    try:
        try:
            os.replace(temp, link)
        except IsADirectoryError:
            if link.is_symlink() or not link.is_dir():
                raise
            if not exchange(temp, link):  # exchanged, temp names the old folder
                old = link.with_name(f".{link.name}.{os.getpid()}.{os.urandom(4).hex()}.old")
                os.rename(link, old)
                try:
                    os.replace(temp, link)
                except BaseException:
                    os.rename(old, link)
                    raise
    finally:
        if temp.is_symlink():
            os.unlink(temp)


def remove_leftovers(link: Path, keep: Path) -> None:
    """Delete every build but ``keep`` and what an interrupted rebuild left (``.report.*`` beside the link)."""
    stale = [old for old in report_versions(link).iterdir() if old.name != keep.name]
    for path in [*stale, *link.parent.glob(f".{link.name}.*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
