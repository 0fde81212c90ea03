"""Fetch image bytes over HTTP(S) with a timeout, retries, a size cap and an on-disk cache.

Only the standard library (:mod:`urllib`) is used. A URL column may hold any string, so the
scheme is checked first: only ``http`` and ``https`` are fetched (``file:``, ``ftp:``,
``data:``... give ``bad_scheme``), redirects included. Transient failures (timeouts,
connection resets, HTTP 408, 429 and 5xx) are retried with exponential backoff; everything
else fails at once. Every outcome is a :class:`Fetched` with a row status, never an exception.

The cache keeps one file per URL, named by the SHA-256 of the URL, under
``<cache_dir>/url/``. :func:`clipeval.data.images.read_image` stores a body there only after it
decoded as an image, so a re-run reads it from disk and makes no request; delete the folder
to fetch again. Concurrency lives in :func:`clipeval.data.images.read_images`, one bounded thread
pool for local files and URLs alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from clipeval import __version__
from clipeval.atomic import atomic_path
from clipeval.paths import DATA_DIR

DEFAULT_CACHE_DIR = DATA_DIR / "cache" / "images"
ALLOWED_SCHEMES = ("http", "https")
TRANSIENT_HTTP_CODES = frozenset({408, 429})  # plus every 5xx
CHUNK_BYTES = 64 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class FetchOptions:
    """How image files are read and URLs fetched (the command line's flags are these fields).

    Attributes:
        read_threads: threads reading image files and fetching URLs at once.
        timeout: seconds allowed for each attempt: connecting, each read, and the whole body.
        retries: extra attempts after a transient failure (0 = try once).
        max_download_mb: the largest body accepted (MiB); larger ones are abandoned mid-stream.
        image_cache_dir: the image cache root (URL bodies go under ``<image_cache_dir>/url/``, images
            stored in datasets under ``hf/`` and ``wds/``); ``None`` keeps no URL body.
        backoff: seconds before the first retry; doubled before each further one.
    """

    read_threads: int = field(default=8, metadata={"help": "threads reading image files and fetching URLs at once",
                                                   "old_flags": ("--workers",)})
    timeout: float = field(default=10.0, metadata={"flag": "--fetch-timeout", "help": "seconds per URL request"})
    retries: int = field(default=3, metadata={"flag": "--fetch-retries",
                                              "help": "extra attempts after a transient URL failure"})
    max_download_mb: float = field(default=50.0, metadata={"help": "largest image body fetched from a URL (MiB)"})
    image_cache_dir: Path | None = field(default=DEFAULT_CACHE_DIR, metadata={
        "help": "image cache root: URL downloads and images stored in datasets (default data/cache/images)",
        "old_flags": ("--cache-dir",)})
    backoff: float = field(default=0.5, metadata={"cli": False})

    @property
    def max_bytes(self) -> int:
        """:attr:`max_download_mb` in bytes."""
        return int(self.max_download_mb * 2**20)


@dataclass(frozen=True)
class Fetched:
    """The outcome of fetching one URL.

    Attributes:
        data: the response body, or ``None`` when fetching failed.
        status: ``ok`` or a failure code (see :data:`clipeval.data.images.STATUSES`).
        error: a human-readable reason; empty when ``status == "ok"``.
        from_cache: whether ``data`` came from the on-disk cache (no request was made).
    """

    data: bytes | None
    status: str
    error: str = ""
    from_cache: bool = False


class _RedirectOutsideHttp(Exception):
    """A redirect pointed at a scheme other than http/https."""


class _HttpOnlyRedirects(HTTPRedirectHandler):
    """Follow redirects only to http/https URLs (urllib alone would also follow ``ftp:``)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = urljoin(req.full_url, headers.get("location") or headers.get("uri") or "")
        if urlsplit(target).scheme.lower() not in ALLOWED_SCHEMES:
            fp.close()
            raise _RedirectOutsideHttp(target)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = build_opener(_HttpOnlyRedirects)
_OPENER.addheaders = [("User-Agent", f"clipeval/{__version__} (Python urllib)"),
                      ("Accept", "image/*,*/*;q=0.5")]


def is_url(ref: str) -> bool:
    """Whether an image reference names a URL (any ``scheme:`` prefix) rather than a local path.

    Windows drive letters (``C:\\...``) count as paths. Any other scheme counts as a URL, so
    that :func:`fetch_url` can refuse it with ``bad_scheme`` instead of reading it as a file.
    """
    return bool(_SCHEME.match(ref)) and not _WINDOWS_DRIVE.match(ref)


def cache_path(url: str, cache_dir: Path) -> Path:
    """The cache file of a URL: ``<cache_dir>/url/<h[:2]>/<h>`` with ``h`` its SHA-256."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return Path(cache_dir) / "url" / digest[:2] / digest


def save_to_cache(url: str, data: bytes, cache_dir: Path) -> None:
    """Store a URL's body in the cache, whole or not at all (atomic rename)."""
    with atomic_path(cache_path(url, cache_dir)) as temp:
        temp.write_bytes(data)


def fetch_url(url: str, options: FetchOptions = FetchOptions()) -> Fetched:
    """Fetch one URL, from the cache when present, retrying transient failures.

    Args:
        url: the URL; only http and https are fetched.
        options: timeout, retries, size cap and cache folder.

    Returns:
        A :class:`Fetched`: ``ok`` with the body, or ``bad_scheme``, ``bad_url``,
        ``http_<code>``, ``timeout``, ``connection_error`` or ``too_large`` with a reason.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as error:
        return Fetched(None, "bad_url", one_line(f"{type(error).__name__}: {error}"))
    if scheme not in ALLOWED_SCHEMES:
        return Fetched(None, "bad_scheme", f"only http and https URLs are fetched, not {scheme}: ({url[:200]})")
    if options.image_cache_dir is not None:
        with contextlib.suppress(OSError):  # no (readable) cache file: download
            return Fetched(cache_path(url, options.image_cache_dir).read_bytes(), "ok", from_cache=True)
    attempt = 0
    while True:
        fetched, transient = _fetch_once(url, options)
        if not transient or attempt >= options.retries:
            return fetched
        time.sleep(options.backoff * 2**attempt)
        attempt += 1


def _fetch_once(url: str, options: FetchOptions) -> tuple[Fetched, bool]:
    """One request; returns the outcome and whether a retry might succeed."""
    started = time.monotonic()
    try:
        with _OPENER.open(Request(url), timeout=options.timeout) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > options.max_bytes:
                return _too_large(options, f"Content-Length is {int(declared):,} bytes"), False
            chunks, size = [], 0
            while chunk := response.read(CHUNK_BYTES):
                size += len(chunk)
                if size > options.max_bytes:
                    return _too_large(options, f"more than {options.max_bytes:,} bytes streamed"), False
                if time.monotonic() - started > options.timeout:
                    return Fetched(None, "timeout", f"body not complete after {options.timeout:g} s"), True
                chunks.append(chunk)
            return Fetched(b"".join(chunks), "ok"), False
    except _RedirectOutsideHttp as error:
        return Fetched(None, "bad_scheme", f"redirected to a non-http(s) URL: {str(error)[:200]}"), False
    except HTTPError as error:
        error.close()
        transient = error.code in TRANSIENT_HTTP_CODES or error.code >= 500
        return Fetched(None, f"http_{error.code}", one_line(f"HTTP {error.code} {error.reason}")), transient
    except TimeoutError:
        return Fetched(None, "timeout", f"no response within {options.timeout:g} s"), True
    except URLError as error:
        if isinstance(error.reason, BaseException):
            return _from_os_error(error.reason)
        return Fetched(None, "bad_url", one_line(f"URLError: {error.reason}")), False
    except (http.client.InvalidURL, ValueError) as error:  # urllib's verdict on a malformed URL
        return Fetched(None, "bad_url", one_line(f"{type(error).__name__}: {error}")), False
    except (http.client.HTTPException, OSError) as error:
        return _from_os_error(error)
    except Exception as error:  # noqa: BLE001 - one odd response must not stop a run
        return Fetched(None, "connection_error", one_line(f"{type(error).__name__}: {error}")), False


def _from_os_error(error: BaseException) -> tuple[Fetched, bool]:
    """Map a low-level network error to a status; resets and timeouts are transient."""
    if isinstance(error, TimeoutError):
        return Fetched(None, "timeout", f"no response in time ({error})"), True
    transient = isinstance(error, (ConnectionResetError, ConnectionAbortedError, http.client.IncompleteRead))
    return Fetched(None, "connection_error", one_line(f"{type(error).__name__}: {error}")), transient


def one_line(text) -> str:
    """Collapse whitespace (server reasons may hold newlines) and cap the length."""
    return " ".join(str(text).split())[:300]


def _too_large(options: FetchOptions, detail: str) -> Fetched:
    return Fetched(None, "too_large", f"{detail}; the cap is {options.max_bytes:,} bytes")
