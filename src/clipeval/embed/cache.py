"""The on-disk embedding cache shared by every run, so a re-run encodes nothing new: one SQLite database of
vectors by (model key, kind, content key), the model key a checkpoint had by its weights identity (so a warm run
loads no model), and the images that failed. docs/speed.md describes the keys, the identities and why SQLite.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

CACHE_ENV = "CLIPEVAL_EMBEDDING_CACHE"
DATABASE = "embeddings.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, vector BLOB NOT NULL, flag INTEGER,
    PRIMARY KEY (model, kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS loads (identity TEXT PRIMARY KEY, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    model TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (model, key)) WITHOUT ROWID;
"""
_LOOKUP_BATCH = 500  # keys per SELECT (SQLite caps the number of bound parameters)


# every file the cache writes in its folder: the database and SQLite's journal, write-ahead log and shared memory
CACHE_FILES = (DATABASE, f"{DATABASE}-journal", f"{DATABASE}-wal", f"{DATABASE}-shm")


def default_cache_dir() -> Path | None:
    """The cache folder: ``$CLIPEVAL_EMBEDDING_CACHE`` if set (``off`` disables), else the user's cache folder's
    ``clipeval/embeddings``: ``$XDG_CACHE_HOME/clipeval/embeddings``, or ``~/.cache/clipeval/embeddings`` when
    ``XDG_CACHE_HOME`` is unset or not absolute (the XDG base-directory rule). Never inside the project or the
    installed package, whatever the working folder or ``--out``."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        home = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
        return (home if home.is_absolute() else Path("~/.cache").expanduser()) / "clipeval" / "embeddings"
    return None if value.strip().lower() in ("", "off", "none", "0") else Path(value).expanduser()


_announcing = False
_announced: set[Path] = set()


@contextmanager
def announcing_location() -> Iterator[None]:
    """Within the block, a cache opened in this process says where it is, once per database, with one
    line on stderr (the command line runs its commands inside it; notebooks and the library stay quiet)."""
    global _announcing
    before, _announcing = _announcing, True
    try:
        yield
    finally:
        _announcing = before


def _announce(path: Path) -> None:
    if _announcing and path not in _announced:
        _announced.add(path)
        # tqdm.write: a progress bar already on the terminal is cleared and redrawn below the line
        tqdm.write(f"embedding cache: {path} (${CACHE_ENV} moves it, --no-embedding-cache skips it)", file=sys.stderr)


class EmbeddingCache:
    """Vectors on disk by (model key, kind, content key); ``timeout``: seconds a write waits for another
    process's lock. Per-model hit and miss counts of this process are in :attr:`counts`."""

    def __init__(self, folder: str | Path, timeout: float = 120.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DATABASE
        _announce(self.path.absolute())
        self.timeout = timeout
        self.counts: dict[str, dict[str, int]] = {}
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._thread: int | None = None

    def _connect(self) -> sqlite3.Connection:
        """One connection per process and thread: a connection must not cross a fork, and SQLite refuses one made in
        another thread (a Ray actor is built in one thread and called in another)."""
        if self._connection is None or (self._pid, self._thread) != (os.getpid(), threading.get_ident()):
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            self._set_up(connection)
            self._connection, self._pid, self._thread = connection, os.getpid(), threading.get_ident()
        return self._connection

    def _set_up(self, connection: sqlite3.Connection) -> None:
        """WAL mode and the tables. Switching the journal mode can report "locked" at once, without
        waiting, while another process is setting up too: retry until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def describe(self, model: str, description: dict) -> None:
        """Record what a model key stands for (spec, weights digest...), for people reading the database."""
        self._connect().execute("INSERT OR IGNORE INTO models VALUES (?, ?)",
                                (model, json.dumps(description, sort_keys=True)))

    def description_of(self, model: str) -> dict | None:
        """What a model key stands for (:meth:`describe`), if recorded."""
        row = self._connect().execute("SELECT description FROM models WHERE model = ?", (model,)).fetchone()
        return json.loads(row[0]) if row else None

    def remember_model(self, identity: str, model: str) -> None:
        """Remember the model key a checkpoint with this weights identity had, so a warm run need not load it."""
        self._connect().execute("INSERT OR REPLACE INTO loads VALUES (?, ?)", (identity, model))

    def model_for(self, identity: str) -> str | None:
        """The model key remembered for a weights identity, if any."""
        row = self._connect().execute("SELECT model FROM loads WHERE identity = ?", (identity,)).fetchone()
        return row[0] if row else None

    def get(self, model: str, kind: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (float32, 1-D); counts hits and misses."""
        return {key: vector for key, (vector, _) in self.get_flagged(model, kind, keys).items()}

    def get_flagged(self, model: str, kind: str, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, bool]]:
        """The cached vectors among ``keys`` with their flag (a caption's truncation); counts hits and misses."""
        found: dict[str, tuple[np.ndarray, bool]] = {}
        distinct = list(dict.fromkeys(keys))
        connection = self._connect()
        for start in range(0, len(distinct), _LOOKUP_BATCH):
            part = distinct[start:start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            rows = connection.execute(f"SELECT key, vector, flag FROM vectors WHERE model = ? AND kind = ? "
                                      f"AND key IN ({marks})", (model, kind, *part))
            found.update((key, (np.frombuffer(blob, dtype=np.float32), bool(flag))) for key, blob, flag in rows)
        count = self.counts.setdefault(model, {"image_hits": 0, "image_misses": 0, "text_hits": 0, "text_misses": 0})
        count[f"{kind}_hits"] += len(found)
        count[f"{kind}_misses"] += len(distinct) - len(found)
        return found

    def put(self, model: str, kind: str, vectors: dict[str, np.ndarray], flags: dict[str, bool] | None = None) -> None:
        """Store vectors (and optional flags) in one transaction, all or none; keys already present stay as they are."""
        if not vectors:
            return
        flags = flags or {}
        rows = [(model, kind, key, np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                 int(flags[key]) if key in flags else None) for key, vector in vectors.items()]
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?, ?)", rows)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def put_failures(self, model: str, failures: dict[str, tuple[str, str]]) -> None:
        """Remember images that failed to decode or preprocess under a model, with (status, error)."""
        if failures:
            self._connect().executemany("INSERT OR IGNORE INTO failures VALUES (?, ?, ?, ?)",
                                        [(model, key, *outcome) for key, outcome in failures.items()])

    def get_failures(self, model: str, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The remembered failures among ``keys``: key -> (status, error)."""
        found: dict[str, tuple[str, str]] = {}
        distinct = list(dict.fromkeys(keys))
        for start in range(0, len(distinct), _LOOKUP_BATCH):
            part = distinct[start:start + _LOOKUP_BATCH]
            rows = self._connect().execute(f"SELECT key, status, error FROM failures WHERE model = ? "
                                           f"AND key IN ({','.join('?' * len(part))})", (model, *part))
            found.update((key, (status, error)) for key, status, error in rows)
        return found

    def size(self) -> int:
        """How many vectors the database holds (all models)."""
        return int(self._connect().execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        """Close the connection this process and thread opened (it reopens on the next use)."""
        if self._connection is not None and (self._pid, self._thread) == (os.getpid(), threading.get_ident()):
            self._connection.close()
        self._connection = None


@dataclass
class ClearedCache:
    """What :func:`clear_cache` did: the folder, the cache files it removed and every other entry it left."""

    folder: Path | None
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    folder_removed: bool = False

    def describe(self) -> str:
        """A few lines for the terminal: what was removed and what was kept."""
        if self.folder is None:
            return f"the embedding cache is off (${CACHE_ENV}); nothing removed"
        lines = [f"embedding cache {self.folder}: removed {len(self.removed)} cache file(s)"
                 + (" and the empty folder" if self.folder_removed else "")]
        lines += [f"  removed {path.name}" for path in self.removed]
        if self.kept:
            lines.append(f"  kept {len(self.kept)} other entr{'y' if len(self.kept) == 1 else 'ies'} "
                         "(not the cache's): " + ", ".join(path.name for path in self.kept[:10])
                         + (" ..." if len(self.kept) > 10 else ""))
        return "\n".join(lines)


def clear_cache(folder: str | Path | None = None) -> ClearedCache:
    """Delete the embedding cache's own files (:data:`CACHE_FILES`) and nothing else; ``folder`` defaults to
    :func:`default_cache_dir`.

    The folder may be one a user named in ``$CLIPEVAL_EMBEDDING_CACHE`` that holds other files: those stay
    (listed as kept), and the folder goes only when it is left empty. Run it when no run is using the cache.
    """
    folder = default_cache_dir() if folder is None else Path(folder).expanduser()
    cleared = ClearedCache(folder)
    if folder is None or not folder.is_dir():
        return cleared
    for name in CACHE_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            cleared.removed.append(path)
    cleared.kept = sorted(folder.iterdir())
    if not cleared.kept:
        folder.rmdir()
        cleared.folder_removed = True
    return cleared
