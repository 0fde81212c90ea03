"""Fetch image bytes over HTTP(S) with a timeout, retries, a size cap and an on-disk cache.

Only the standard library (:mod:`urllib`) is used. A URL column may hold any string, so the
scheme is checked first: only ``http`` and ``https`` are fetched (``file:``, ``ftp:``,
``data:``... give ``bad_scheme``), redirects included. Transient failures (timeouts,
connection resets, HTTP 408, 429 and 5xx) are retried with exponential backoff; everything
else fails at once. Every outcome is a :class:`Fetched` with a row status, never an exception.

Image URLs come from data, so they are untrusted: by default only public addresses are
fetched. The host of every request (the first one and each redirect target) is resolved once,
every address it resolves to is checked (:func:`is_public_address`: not loopback, private,
link-local such as the cloud metadata address ``169.254.169.254``, multicast, reserved or
unspecified; IPv4-mapped, 6to4 and NAT64 IPv6 forms are judged by the IPv4 address inside),
and the connection is opened to that vetted address itself, so a second DNS answer cannot
swap in another (HTTPS still checks the certificate against the URL's host name). A refused
URL gets the status ``private_address`` and no byte is sent to it. ``allow_private_urls``
(``--allow-private-urls``) turns the check off, for data served from your own machine or
network. Behind a proxy from the environment (``http_proxy``...) the proxy itself is trusted
and the URL's host is checked by resolving it here (the proxy resolves it again).

The cache keeps one file per URL, named by the SHA-256 of the URL, under
``<cache_dir>/url/``. :func:`clipeval.data.images.read_image` stores a body there only after it
decoded as an image, so a re-run reads it from disk and makes no request; delete the folder
to fetch again. A cached body is returned without a request, so without a new address check.
Concurrency lives in :func:`clipeval.data.images.read_images`, one bounded thread pool for
local files and URLs alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import HTTPHandler, HTTPRedirectHandler, HTTPSHandler, OpenerDirector, Request, build_opener

from clipeval import __version__
from clipeval.atomic import atomic_path
from clipeval.paths import DATA_DIR

DEFAULT_CACHE_DIR = DATA_DIR / "cache" / "images"
ALLOWED_SCHEMES = ("http", "https")
TRANSIENT_HTTP_CODES = frozenset({408, 429})  # plus every 5xx
CHUNK_BYTES = 64 * 1024
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
PRIVATE_HINT = "--allow-private-urls opts in"


@dataclass(frozen=True)
class FetchOptions:
    """How image files are read and URLs fetched (the command line's flags are these fields).

    Attributes:
        read_threads: threads reading image files and fetching URLs at once.
        timeout: seconds allowed for each attempt, the whole response: connecting, headers and body
            (one still incomplete is cut off, ``timeout``; not retried once its headers had come).
        retries: extra attempts after a transient failure (0 = try once).
        max_download_mb: the largest body accepted (MiB); larger ones are abandoned mid-stream. Local
            image files are read up to the same cap.
        image_cache_dir: the image cache root (URL bodies go under ``<image_cache_dir>/url/``, images
            stored in datasets under ``hf/`` and ``wds/``); ``None`` keeps no URL body.
        backoff: seconds before the first retry; doubled before each further one.
        allow_private_urls: also fetch URLs whose host is a loopback, private, link-local or
            reserved address (refused by default, redirects included: ``private_address``).
        image_root: a folder that local image paths from the data may also lie under, besides the
            table's (or shard's) own folder and the image cache.
        allow_any_path: read a local image path from the data wherever it points (by default one
            leaving those folders gets ``outside_root``).
    """

    read_threads: int = field(default=8, metadata={"help": "threads reading image files and fetching URLs at once",
                                                   "old_flags": ("--workers",)})
    timeout: float = field(default=10.0, metadata={"flag": "--fetch-timeout",
                                                   "help": "seconds per URL request, the whole response"})
    retries: int = field(default=3, metadata={"flag": "--fetch-retries",
                                              "help": "extra attempts after a transient URL failure"})
    max_download_mb: float = field(default=50.0, metadata={
        "help": "largest image fetched from a URL or read from a local file (MiB)"})
    image_cache_dir: Path | None = field(default=DEFAULT_CACHE_DIR, metadata={
        "help": "image cache root: URL downloads and images stored in datasets (default data/cache/images)",
        "old_flags": ("--cache-dir",)})
    backoff: float = field(default=0.5, metadata={"cli": False})
    allow_private_urls: bool = field(default=False, metadata={
        "help": "also fetch image URLs on loopback, private, link-local or reserved addresses "
                "(refused by default: status private_address)"})
    image_root: Path | None = field(default=None, metadata={
        "help": "a folder local image paths from the data may lie under, besides the table's own folder "
                "(others get outside_root)"})
    allow_any_path: bool = field(default=False, metadata={
        "help": "read local image paths from the data wherever they point (refused by default outside the "
                "table's folder, --image-root and the image cache: status outside_root)"})

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


class _PrivateAddress(Exception):
    """A request's host resolves to an address that is not public; nothing was sent to it."""


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is a public internet address, one an image URL may be fetched from by default.

    Loopback, private (RFC 1918, unique-local IPv6), shared (100.64.0.0/10), link-local (the
    cloud metadata address 169.254.169.254 included), multicast, reserved and unspecified
    addresses are not. An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``,
    6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) is judged by that IPv4 address too.
    """
    if ip.version == 6:
        if ip.ipv4_mapped is not None:  # the IPv4 address itself, on a dual-stack socket
            return is_public_address(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None and not is_public_address(embedded):
            return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def _vetted_addresses(host: str, port: int) -> list:
    """``getaddrinfo``'s answers for ``host``, after checking that every address in them is public.

    Raises:
        _PrivateAddress: one of the addresses is not public (so none is used).
        OSError: the name does not resolve.
    """
    answers = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    for *_, sockaddr in answers:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not is_public_address(ip):
            shown = host if str(ip) == host.strip("[]") else f"{host} (resolves to {ip})"
            raise _PrivateAddress(f"{shown} is a loopback, private, link-local or reserved address; "
                                  f"not fetched ({PRIVATE_HINT})")
    if not answers:
        raise OSError(f"no address for {host}")
    return answers


def _vetted_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_):
    """:func:`socket.create_connection`, but to the addresses :func:`_vetted_addresses` checked, never re-resolved."""
    host, port = address
    last_error: OSError | None = None
    for family, kind, proto, _name, sockaddr in _vetted_addresses(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as error:
            sock.close()
            last_error = error
    raise last_error  # type: ignore[misc]  # _vetted_addresses never returns an empty list


_ATTEMPT = threading.local()  # the running thread's Deadline, which its connections register with


class Deadline:
    """A whole response's time limit: when it passes, every connection opened inside is shut down.

    A socket timeout bounds each read, not the response: a server sending one byte at a time
    never trips it. Inside ``with Deadline(seconds) as deadline:``, the socket of every connection
    opened by a :func:`deadline_opener` (in this thread) registers here, and a timer shuts them when
    the time is up, so any read in progress (headers or body, HTTP or HTTPS) ends at once;
    :attr:`expired` then says why it failed.
    """

    def __init__(self, seconds: float):
        self.seconds, self.expired, self.answered = seconds, False, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _ATTEMPT.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        _ATTEMPT.deadline = None

    def answer(self) -> None:
        """Note that the response's headers have come: :attr:`answered` when in time (headers cut off by the
        deadline end early, and look complete)."""
        self.answered = not self.expired

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.expired:
            self._shut(sock)

    def _expire(self) -> None:
        self.expired = True
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watched:
    """A connection whose socket registers with its thread's :class:`Deadline`, if one is running.

    The socket itself, not the connection: urllib drops the connection's reference to it once the
    headers are read, while the response goes on reading its body from it.
    """

    def connect(self):
        super().connect()
        deadline = getattr(_ATTEMPT, "deadline", None)
        if deadline is not None:
            deadline.watch(self.sock)


class _WatchedHTTPConnection(_Watched, http.client.HTTPConnection):
    """A plain HTTP connection (any address, or a trusted proxy) under the thread's deadline."""


class _WatchedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    """A plain HTTPS connection under the thread's deadline."""


class _VettedHTTPConnection(_Watched, http.client.HTTPConnection):
    """An HTTP connection that only opens a socket to a vetted public address of its host."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _vetted_connection


class _VettedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    """:class:`_VettedHTTPConnection` for HTTPS; the certificate is still checked against the host name."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _vetted_connection


def _connection_class(req: Request, vetted: type, plain: type) -> type:
    """The vetted connection, or, through a proxy (which is trusted), a plain one after checking the URL's host."""
    if not (req.has_proxy() or req._tunnel_host):
        return vetted
    target = urlsplit(req.full_url)
    _vetted_addresses(target.hostname or "", target.port or (443 if target.scheme == "https" else 80))
    return plain


class _PublicHTTPHandler(HTTPHandler):
    """urllib's HTTP handler, connecting through :class:`_VettedHTTPConnection`."""

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_connection_class(req, _VettedHTTPConnection, _WatchedHTTPConnection), req, **kwargs)


class _PublicHTTPSHandler(HTTPSHandler):
    """urllib's HTTPS handler (same TLS context and checks), connecting through :class:`_VettedHTTPSConnection`."""

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_connection_class(req, _VettedHTTPSConnection, _WatchedHTTPSConnection), req,
                               **kwargs)


class _WatchedHTTPHandler(HTTPHandler):
    """urllib's HTTP handler, its connections under the thread's :class:`Deadline`."""

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_WatchedHTTPConnection, req, **kwargs)


class _WatchedHTTPSHandler(HTTPSHandler):
    """urllib's HTTPS handler (same TLS context and checks), its connections under the thread's :class:`Deadline`."""

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_WatchedHTTPSConnection, req, **kwargs)


def deadline_opener(*handlers) -> OpenerDirector:
    """``urllib.request.build_opener(*handlers)`` whose connections a :class:`Deadline` can cut (any address)."""
    return build_opener(*handlers, _WatchedHTTPHandler, _WatchedHTTPSHandler)


_HEADERS = [("User-Agent", f"clipeval/{__version__} (Python urllib)"), ("Accept", "image/*,*/*;q=0.5")]
_OPENER = build_opener(_HttpOnlyRedirects, _PublicHTTPHandler, _PublicHTTPSHandler)  # public addresses only
_OPENER.addheaders = _HEADERS
_ANY_ADDRESS_OPENER = deadline_opener(_HttpOnlyRedirects)  # allow_private_urls
_ANY_ADDRESS_OPENER.addheaders = _HEADERS


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
        ``private_address``, ``http_<code>``, ``timeout``, ``connection_error`` or ``too_large``
        with a reason.
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
    """One request, its whole response within ``options.timeout``; the outcome and whether a retry might succeed.

    A response still incomplete when the time is up is cut off, and not retried once its headers
    had come (a server that slow would hold a reading thread for every retry); a server that has
    not answered at all is retried, as a busy one may answer next time.
    """
    with Deadline(options.timeout) as deadline:
        fetched, transient = _request(url, options, deadline)
    if deadline.expired:  # a body cut off at the deadline can look complete (no Content-Length: read to the close)
        if not deadline.answered:  # no response yet, as from a busy server: worth another try
            return Fetched(None, "timeout", f"no response within {options.timeout:g} s"), True
        return Fetched(None, "timeout", f"the whole response took longer than {options.timeout:g} s "
                                        "(--fetch-timeout); not retried"), False
    return fetched, transient


def _request(url: str, options: FetchOptions, deadline: Deadline) -> tuple[Fetched, bool]:
    """One request and its reading under ``deadline`` (told when the headers come); the outcome and whether a
    retry might succeed."""
    started = time.monotonic()
    opener = _ANY_ADDRESS_OPENER if options.allow_private_urls else _OPENER
    try:
        with opener.open(Request(url), timeout=options.timeout) as response:
            deadline.answer()
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
    except _PrivateAddress as error:
        return Fetched(None, "private_address", one_line(error)), False
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
