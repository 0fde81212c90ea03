"""The finder's local web page: ``clipeval serve INDEX`` (Flask, one plain HTML page, no build step).

:func:`create_app` wraps an index folder (:class:`~clipeval.finder.search.FinderIndex`) in a small
JSON API and serves the page in ``finder/static/`` (``index.html``, ``finder.js``, ``finder.css``):
text and image queries, click a result for its metadata or for similar images, a checkpoint switch
and a side-by-side mode that marks the images two checkpoints both return.

Routes (every error is JSON ``{"error": message}`` with its status code, never a stack trace):

- ``GET /api/checkpoints``: the index's checkpoints (specs, default first), its images and the input rows
  they came from.
- ``GET /api/search?q=TEXT&checkpoint=SPEC[&checkpoint=SPEC2]&k=10``: text → image.
- ``POST /api/search-image`` (multipart ``image``, same ``checkpoint``/``k`` fields): image → image;
  the upload is capped at :data:`MAX_UPLOAD_BYTES` and decoded through the project's image
  allow-list (:func:`clipeval.data.images.decode_image`) before any model sees it.
- ``GET /api/similar/<id>``: the images nearest to an indexed one.
- ``GET /api/item/<id>``: one item's metadata.
- ``GET /thumb/<id>``: its thumbnail, found only by id lookup (:meth:`FinderIndex.thumbnail_path`),
  never by a path taken from the request.

With two checkpoints a search answers both rankings and ``overlap``, the ids in both top k.

Security defaults (docs/finder.md): bound to 127.0.0.1 (``--host`` changes it, with a warning when
not loopback); on loopback only ``localhost``/``127.0.0.1``/``::1`` Host headers are answered (DNS
rebinding); a cross-origin POST is refused, and so is any cross-site request (``Sec-Fetch-Site`` or
``Origin``) to a route that runs a model or writes the query log; every response carries a Content-Security-Policy
(``default-src 'self'``: no inline script, nothing from the network) and ``nosniff``; the page puts
captions and ids in the DOM with ``textContent`` only; queries are logged to
``<index>/queries.jsonl`` only with ``log_queries=True`` (``--log-queries``), images as their
SHA-256, never their bytes, and never through a symlink.

The server is Werkzeug's threaded server (Flask's own): enough for a local tool used by one person;
searches run one at a time behind a lock (the encoders are loaded once and shared).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import math
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipeval.extras import require
from clipeval.finder.options import DEFAULT_HOST, DEFAULT_PORT
from clipeval.layout import IndexLayout

STATIC_DIR = Path(__file__).with_name("static")
MAX_UPLOAD_BYTES = 20 * 2**20  # an uploaded query image; larger requests get 413
MAX_K = 100
DEFAULT_K = 10
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# the routes that run a model or write the query log: refused to cross-site requests (any other page could drive them)
MODEL_ROUTES = frozenset({"search_text", "search_image", "similar"})
# Sec-Fetch-Site values a browser sends for the finder's own page, or a request the user typed
OWN_SITES = frozenset({"same-origin", "none"})
CSP = ("default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An expected failure of a request: its status code and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _plain(value):
    """A JSON-safe copy of ``value``: numpy scalars to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _thumb_url(item_id: str) -> str:
    return "/thumb/" + urllib.parse.quote(item_id, safe="")


def _hit(hit) -> dict:
    return {"rank": int(hit.rank), "id": hit.id, "score": float(hit.score), "caption": hit.caption or "",
            "captions": list(hit.captions), "thumb": _thumb_url(hit.id)}


class _Finder:
    """The state behind the routes: the open index, its ids, the search lock and the query log."""

    def __init__(self, index, log_queries: bool):
        self.index = index
        self.thumbnails = index.layout.thumbnails.resolve()
        self.ids = set(index.items["id"].astype(str))
        self.lock = threading.Lock()
        self.log_path = index.layout.queries if log_queries else None
        if self.log_path is not None and self.log_path.is_symlink():
            raise ValueError(f"{self.log_path} is a symlink; the query log is written only to a plain file in the "
                             "index folder: remove it, or serve without --log-queries")
        self.log_lock = threading.Lock()

    def checkpoints(self, requested: list[str]) -> list[str]:
        known = list(self.index.checkpoints)
        chosen = [spec for spec in requested if spec] or known[:1]
        if len(chosen) > 2:
            raise ApiError(400, "give one checkpoint, or two for side by side")
        for spec in chosen:
            if spec not in known:
                raise ApiError(400, f"unknown checkpoint {spec!r}; this index has: {', '.join(known)}")
        if len(chosen) == 2 and chosen[0] == chosen[1]:
            chosen = chosen[:1]
        return chosen

    def known_id(self, item_id: str) -> str:
        if item_id not in self.ids:
            raise ApiError(404, f"no item {item_id!r} in this index")
        return item_id

    def run(self, kind: str, query: str, checkpoints: list[str], k: int, search) -> dict:
        """Run ``search(checkpoint)`` for each checkpoint; the answer (and a log line when asked)."""
        started = time.perf_counter()
        with self.lock:
            results = [{"checkpoint": spec, "hits": [_hit(hit) for hit in search(spec)]} for spec in checkpoints]
        answer = {"kind": kind, "query": query, "k": k, "results": results, "overlap": None,
                  "seconds": round(time.perf_counter() - started, 4)}
        if len(results) == 2:
            second = {hit["id"] for hit in results[1]["hits"]}
            answer["overlap"] = [hit["id"] for hit in results[0]["hits"] if hit["id"] in second]
        self.log(kind, query, checkpoints, k, results)
        return answer

    def log(self, kind: str, query: str, checkpoints: list[str], k: int, results: list[dict]) -> None:
        if self.log_path is None:
            return
        line = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": kind, "query": query,
                "checkpoints": checkpoints, "k": k,
                "top": {result["checkpoint"]: [hit["id"] for hit in result["hits"]] for result in results}}
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC  # a symlink: ELOOP, not followed
        with self.log_lock, os.fdopen(os.open(self.log_path, flags, 0o600), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def thumbnail(self, item_id: str) -> Path:
        """The thumbnail file of an indexed id; 404 for anything else, whatever the id holds."""
        if item_id not in self.ids:
            raise ApiError(404, "no such thumbnail")
        path = self.index.thumbnail_path(item_id)
        if path is None:
            raise ApiError(404, "this item has no thumbnail (its image failed to load)")
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.thumbnails) or not resolved.is_file():
            raise ApiError(404, "no such thumbnail")
        return resolved


def _host_name(host: str) -> str:
    """A ``Host`` header's name without its port (``[::1]:8765`` gives ``::1``)."""
    if host.startswith("["):
        return host[1:host.find("]")]
    return host.rsplit(":", 1)[0].lower()


def _cross_site(headers, host: str) -> bool:
    """Whether a browser sent the request from another site's page: its ``Sec-Fetch-Site`` is not the finder's own
    (``same-site`` too: another port of localhost is another program), or its ``Origin`` is another host."""
    site = headers.get("Sec-Fetch-Site")
    origin = headers.get("Origin")
    return bool((site and site not in OWN_SITES) or (origin and urllib.parse.urlsplit(origin).netloc != host))


def _k(value) -> int:
    try:
        k = int(value) if value not in (None, "") else DEFAULT_K
    except (TypeError, ValueError):
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}") from None
    if not 1 <= k <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}")
    return k


def create_app(index_dir, log_queries: bool = False, host: str = DEFAULT_HOST):
    """The Flask app serving the page and JSON API over the index folder ``index_dir``.

    Args:
        index_dir: an index folder written by ``clipeval index`` (or an open ``FinderIndex``).
        log_queries: append each query to ``<index>/queries.jsonl`` (off by default).
        host: the address the server will bind; on a loopback one only loopback Host headers are answered.

    Returns:
        A ``flask.Flask`` application.
    """
    flask = require("flask", "finder", "the finder's web page (clipeval serve)")
    werkzeug_exceptions = require("werkzeug.exceptions", "finder", "the finder's web page (clipeval serve)")

    from clipeval.finder import search

    index = index_dir if isinstance(index_dir, search.FinderIndex) else search.FinderIndex.open(index_dir)
    finder = _Finder(index, log_queries)
    app = flask.Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES, MAX_FORM_MEMORY_SIZE=MAX_UPLOAD_BYTES,
                      JSON_SORT_KEYS=False)
    loopback_only = is_loopback(host)
    app.url_map.merge_slashes = False  # "/thumb//etc/passwd" is the id "/etc/passwd" (404), not a redirect
    app.extensions["clipeval_finder"] = finder
    request = flask.request

    def error(status: int, message: str):
        response = flask.jsonify({"error": message})
        response.status_code = status
        return response

    @app.errorhandler(ApiError)
    def api_error(failure: ApiError):
        return error(failure.status, failure.message)

    @app.errorhandler(search.UnknownItem)
    def unknown_item(failure):
        return error(404, str(failure))

    @app.errorhandler(search.UnknownCheckpoint)
    @app.errorhandler(search.QueryImageError)
    def bad_query(failure):
        return error(400, str(failure))

    @app.errorhandler(werkzeug_exceptions.RequestEntityTooLarge)
    def too_large(_failure):
        return error(413, f"the upload is larger than the {MAX_UPLOAD_BYTES // 2**20} MB cap")

    @app.errorhandler(werkzeug_exceptions.HTTPException)
    def http_error(failure):
        return error(failure.code or 500, failure.description or failure.name)

    @app.errorhandler(Exception)
    def unexpected(failure: Exception):
        log.exception("finder request failed: %s %s", request.method, request.path)
        return error(500, f"the server failed on this request ({type(failure).__name__}); see its log")

    @app.before_request
    def loopback_hosts_and_same_origin_posts_only():
        if loopback_only and _host_name(request.host) not in LOOPBACK_NAMES:
            raise ApiError(400, "this server answers only to localhost, 127.0.0.1 or [::1] (DNS rebinding guard)")
        origin = request.headers.get("Origin")
        if request.method == "POST" and origin and urllib.parse.urlsplit(origin).netloc != request.host:
            raise ApiError(403, "cross-origin requests are refused")
        if request.endpoint in MODEL_ROUTES and _cross_site(request.headers, request.host):
            raise ApiError(403, "cross-site requests are refused: searches run only from the finder's own page")

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page():
        return flask.send_from_directory(STATIC_DIR, "index.html")

    @app.get("/favicon.ico")
    def favicon():
        return flask.send_from_directory(STATIC_DIR, "favicon.svg", mimetype="image/svg+xml")

    @app.get("/api/checkpoints")
    def checkpoints():
        return flask.jsonify({"checkpoints": list(index.checkpoints), "images": len(index.items),
                              "rows": int(index.manifest.get("rows", len(index.items))),
                              "default_k": DEFAULT_K, "max_k": MAX_K, "log_queries": log_queries})

    @app.get("/api/search")
    def search_text():
        query = (request.args.get("q") or "").strip()
        if not query:
            raise ApiError(400, "type a query (q=...)")
        if len(query) > 1000:
            raise ApiError(400, "the query is longer than 1000 characters")
        specs, k = finder.checkpoints(request.args.getlist("checkpoint")), _k(request.args.get("k"))
        return flask.jsonify(finder.run("text", query, specs, k,
                                        lambda spec: index.search_text(query, checkpoint=spec, k=k)))

    @app.post("/api/search-image")
    def search_image():
        from clipeval.data.images import decode_image

        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "send the image as the multipart field 'image'")
        data = upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"the upload is larger than the {MAX_UPLOAD_BYTES // 2**20} MB cap")
        loaded = decode_image(data)
        if loaded.status != "ok":
            raise ApiError(400, f"not a usable image ({loaded.status}): {loaded.error}")
        specs, k = finder.checkpoints(request.form.getlist("checkpoint")), _k(request.form.get("k"))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return flask.jsonify(finder.run("image", digest, specs, k,
                                        lambda spec: index.search_image(data, checkpoint=spec, k=k)))

    @app.get("/api/similar/<path:item_id>")
    def similar(item_id: str):
        item_id = finder.known_id(item_id)
        specs, k = finder.checkpoints(request.args.getlist("checkpoint")), _k(request.args.get("k"))
        return flask.jsonify(finder.run("similar", item_id, specs, k,
                                        lambda spec: index.similar(item_id, checkpoint=spec, k=k)))

    @app.get("/api/item/<path:item_id>")
    def item(item_id: str):
        item_id = finder.known_id(item_id)
        with finder.lock:
            metadata = _plain(index.item(item_id))
        return flask.jsonify({"id": item_id, "thumb": _thumb_url(item_id), "metadata": metadata})

    @app.get("/thumb/<path:item_id>")
    def thumb(item_id: str):
        response = flask.send_file(finder.thumbnail(item_id), mimetype="image/jpeg", max_age=3600)
        return response

    return app


# ---- serving ---------------------------------------------------------------------------------------------


def exposure_warning(host: str) -> str | None:
    """The warning printed when ``host`` is reachable from other machines; None for a loopback address."""
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}, reachable from other machines: the page has no login, and anyone who "
            "can reach it can search this index and see its images")


@dataclass
class Served:
    """A running server: its URL; :meth:`stop` shuts it down."""

    url: str
    server: object
    thread: threading.Thread | None = None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)


def make_server(index_dir, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_queries: bool = False,
                quiet: bool = False) -> Served:
    """Bind Werkzeug's threaded server (Flask's own) to ``host:port`` (``port=0``: a free one); not yet serving.

    ``quiet`` drops the server's line per request on stderr (a server in a notebook or a test).
    """
    serving_module = require("werkzeug.serving", "finder", "the finder's web page (clipeval serve)")
    app = create_app(index_dir, log_queries=log_queries, host=host)

    class QuietHandler(serving_module.WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:
            pass

    server = serving_module.make_server(host, port, app, threaded=True,
                                        request_handler=QuietHandler if quiet else None)
    shown = f"[{host}]" if ":" in host else host
    return Served(f"http://{shown}:{server.server_port}/", server)


def start_server(index_dir, host: str = DEFAULT_HOST, port: int = 0, log_queries: bool = False) -> Served:
    """Serve ``index_dir`` from a background thread (``port=0``: a free port), logging no request line;
    :meth:`Served.stop` ends it."""
    served = make_server(index_dir, host, port, log_queries, quiet=True)
    served.thread = threading.Thread(target=served.server.serve_forever, name="clipeval-finder", daemon=True)
    served.thread.start()
    return served


@contextlib.contextmanager
def serving(index_dir, host: str = DEFAULT_HOST, port: int = 0, log_queries: bool = False) -> Iterator[str]:
    """``with serving(index) as url:`` the page at ``url`` for the duration of the block."""
    served = start_server(index_dir, host, port, log_queries)
    try:
        yield served.url
    finally:
        served.stop()


def serve(index_dir, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_queries: bool = False) -> None:
    """Serve the page until interrupted (``clipeval serve``): Werkzeug's threaded server, for local use."""
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    served = make_server(index_dir, host, port, log_queries)
    where = f" (queries logged to {IndexLayout(index_dir).queries})" if log_queries else " (queries not logged)"
    print(f"serving {index_dir} at {served.url}{where}; Ctrl-C stops", flush=True)
    try:
        served.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        served.server.server_close()


def screenshot(index_dir, out_png, query: str, checkpoint: str | list[str] | None = None, k: int = 10,
               size: tuple[int, int] = (1280, 900), full_page: bool = True) -> Path:
    """Serve ``index_dir``, run ``query`` in headless Chromium and save the page as a PNG (for the run report).

    Args:
        index_dir: the index folder.
        out_png: where the PNG goes (its folder is created).
        query: the text query typed into the page.
        checkpoint: a spec, or two for the side-by-side view (default: the index's first).
        k: results per checkpoint.
        size: the page's width and (at least) height in pixels.
        full_page: the whole page, taller than ``size`` when the results need it; else the first screen only.

    Returns:
        The PNG's path.

    Raises:
        BrowserMissing: Chromium or chromedriver is not installed (the message says how to install them).
    """
    from clipeval.finder.browser import chromium_driver, page_height, run_query_in_page, set_viewport

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    specs = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint or [])
    with serving(index_dir) as url, chromium_driver(size) as driver:
        run_query_in_page(driver, url, query, specs, k)
        if full_page:
            set_viewport(driver, size[0], max(size[1], page_height(driver)))
        driver.save_screenshot(str(out_png))
    return out_png
