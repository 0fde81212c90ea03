"""URL images against a local HTTP server on 127.0.0.1: statuses, retries, size cap, schemes, cache."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from clipeval.data.fetch import FetchOptions, cache_path, fetch_url, is_url
from clipeval.data.images import read_images
from http_stub import serving

CAP = 50_000  # bytes; the huge bodies are 4x this
CAP_MB = CAP / 2**20
SLOW_S = 3.0  # the slow endpoint's delay, well above CLIENT_TIMEOUT_S even on a loaded CPU
CLIENT_TIMEOUT_S = 1.0
# the stub is on loopback, which is refused by default (tests/test_security_network.py): opt in
OPTIONS = FetchOptions(timeout=CLIENT_TIMEOUT_S, retries=2, backoff=0.01, max_download_mb=CAP_MB, image_cache_dir=None,
                       allow_private_urls=True)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


PNG = _encode(Image.new("RGB", (8, 8), (200, 10, 10)), "PNG")
NOISE_JPEG = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")


class _Handler(BaseHTTPRequestHandler):
    """Routes by path; ``self.server.hits`` counts requests per full path (query included)."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        with self.server.lock:
            self.server.hits[self.path] += 1
            hit = self.server.hits[self.path]
        route = self.path.split("?")[0]
        if route == "/good.png":
            self._send(200, PNG)
        elif route == "/good.jpg":
            self._send(200, NOISE_JPEG)
        elif route in ("/missing.png", "/forbidden.png"):
            self._send(404 if route == "/missing.png" else 403, b"no")
        elif route == "/slow.png":
            time.sleep(SLOW_S)
            self._send(200, PNG)
        elif route.startswith("/redirect"):
            target = {"/redirect": "/good.png", "/redirect-ftp": "ftp://127.0.0.1/x.png",
                      "/redirect-file": "file:///etc/passwd", "/redirect-loop": "/redirect-loop"}[route]
            self._send(302, b"", location=target)
        elif route == "/huge-declared.png":
            self._send(200, b"\0" * (4 * CAP))
        elif route == "/huge-streamed.png":  # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            for _ in range(4 * CAP // 1000):
                self.wfile.write(b"\0" * 1000)
        elif route == "/text.jpg":
            self._send(200, b"this is text, not a JPEG", content_type="text/plain")
        elif route == "/empty.png":
            self._send(200, b"")
        elif route == "/truncated.jpg":
            self._send(200, NOISE_JPEG[: len(NOISE_JPEG) // 2])
        elif route == "/flaky.png":  # 503 once, then the image
            self._send(503, b"busy") if hit == 1 else self._send(200, PNG)
        elif route == "/throttled.png":  # 429 once, then the image
            self._send(429, b"slow down") if hit == 1 else self._send(200, PNG)
        elif route == "/reset.png":  # drop the connection once without answering, then the image
            if hit > 1:
                self._send(200, PNG)
        elif route == "/down.png":
            self._send(503, b"down")
        else:
            self._send(500, b"unknown route")

    def _send(self, code: int, body: bytes, content_type: str = "image/png", location: str | None = None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients abandon huge/slow bodies on purpose
        pass


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.hits, httpd.lock = Counter(), threading.Lock()
    with serving(httpd):
        yield httpd


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy from the environment must not intercept requests to the local server."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_url_batch_every_case_gets_its_status(server):
    cases = {
        "/good.png": "ok",
        "/good.jpg": "ok",
        "/redirect": "ok",
        "/missing.png": "http_404",
        "/forbidden.png": "http_403",
        "/slow.png?batch": "timeout",
        "/huge-declared.png": "too_large",
        "/huge-streamed.png": "too_large",
        "/text.jpg": "decode_error",
        "/empty.png": "empty_file",
        "/truncated.jpg": "truncated",
        "/redirect-ftp": "bad_scheme",
        "/redirect-file": "bad_scheme",
        "/down.png?batch": "http_503",
    }
    refs = [_url(server, path) for path in cases] + ["file:///etc/passwd", "http://"]
    expected = [*cases.values(), "bad_scheme", "bad_url"]

    loaded = read_images(refs, None, fetch_options=replace(OPTIONS, read_threads=4, retries=0))

    assert len(loaded) == len(refs)
    assert [item.status for item in loaded] == expected
    assert all((item.image is not None) == (item.status == "ok") for item in loaded)
    assert all(item.error for item in loaded if item.status != "ok")


def test_redirect_loop_ends_with_the_redirect_code(server):
    result = fetch_url(_url(server, "/redirect-loop"), OPTIONS)
    assert result.status == "http_302"
    assert "loop" in result.error and "\n" not in result.error


@pytest.mark.parametrize("url", ["http://", "http://exa mple.com/x.png", "https://[::1/x.png"])
def test_malformed_urls_are_bad_url(url):
    assert fetch_url(url, OPTIONS).status == "bad_url"


@pytest.mark.parametrize("path", ["/flaky.png", "/throttled.png", "/reset.png"])
def test_transient_failures_are_retried_then_succeed(server, path):
    path = f"{path}?retry-test"
    result = fetch_url(_url(server, path), OPTIONS)
    assert result.status == "ok"
    assert result.data == PNG
    assert server.hits[path] == 2


def test_persistent_5xx_gives_up_after_the_retries(server):
    result = fetch_url(_url(server, "/down.png?persistent"), OPTIONS)
    assert (result.status, result.data) == ("http_503", None)
    assert server.hits["/down.png?persistent"] == OPTIONS.retries + 1


@pytest.mark.parametrize(("path", "status"), [("/missing.png?once", "http_404"), ("/forbidden.png?once", "http_403")])
def test_client_errors_are_not_retried(server, path, status):
    assert fetch_url(_url(server, path), OPTIONS).status == status
    assert server.hits[path] == 1


def test_timeouts_are_retried_and_reported(server):
    options = replace(OPTIONS, retries=1)
    result = fetch_url(_url(server, "/slow.png?timeout-test"), options)
    assert result.status == "timeout"
    assert server.hits["/slow.png?timeout-test"] == 2


def test_connection_refused_is_a_connection_error():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = fetch_url(f"http://127.0.0.1:{port}/x.png", OPTIONS)
    assert result.status == "connection_error"
    assert "Refused" in result.error


@pytest.mark.parametrize("url", ["file:///etc/passwd", "FILE:///etc/hostname", "ftp://127.0.0.1/x.png",
                                 "data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)", "s3://bucket/x.png"])
def test_non_http_schemes_are_never_fetched(url):
    result = fetch_url(url, OPTIONS)
    assert (result.status, result.data) == ("bad_scheme", None)


def test_is_url_tells_urls_from_paths():
    assert is_url("https://example.org/a.jpg") and is_url("file:///tmp/a.jpg") and is_url("data:x")
    assert not any(is_url(ref) for ref in ("images/a.jpg", "/abs/a.jpg", "C:\\images\\a.jpg", "C:/images/a.jpg",
                                            "a.jpg"))


def test_second_fetch_comes_from_the_cache_without_a_request(server, tmp_path):
    options = replace(OPTIONS, retries=0, image_cache_dir=tmp_path / "cache")
    url = _url(server, "/good.png?cache-test")

    first = read_images([url], None, fetch_options=options)
    second = read_images([url], None, fetch_options=options)

    assert server.hits["/good.png?cache-test"] == 1
    assert cache_path(url, options.image_cache_dir).read_bytes() == PNG
    assert first[0].status == second[0].status == "ok"
    assert first[0].image.tobytes() == second[0].image.tobytes()
    assert fetch_url(url, options).from_cache


def test_bodies_that_do_not_decode_are_not_cached(server, tmp_path):
    options = replace(OPTIONS, retries=0, image_cache_dir=tmp_path / "cache")
    url = _url(server, "/text.jpg?not-cached")
    assert [item.status for item in read_images([url, url], None, fetch_options=options)] == ["decode_error"] * 2
    read_images([url], None, fetch_options=options)
    assert server.hits["/text.jpg?not-cached"] == 2  # one per call (deduplicated within a call), none cached
    assert not cache_path(url, options.image_cache_dir).exists()


def test_mixed_local_paths_and_urls_keep_input_order(server, tmp_path):
    (tmp_path / "local.png").write_bytes(PNG)
    refs = [_url(server, "/good.jpg?mixed"), "local.png", _url(server, "/missing.png?mixed"), str(tmp_path / "no.png"),
            _url(server, "/good.jpg?mixed")]
    loaded = read_images(refs, tmp_path, fetch_options=replace(OPTIONS, read_threads=3))
    assert [item.status for item in loaded] == ["ok", "ok", "http_404", "missing", "ok"]
    assert loaded[0].image.size == (64, 64) and loaded[1].image.size == (8, 8)
    assert server.hits["/good.jpg?mixed"] == 1  # a repeated URL is fetched once per call


def test_scoring_a_messy_table_keeps_every_row_with_its_status(server, tmp_path, tiny_specs):
    """End to end: bad files, URLs and odd captions in one table; the run completes, rows in = rows out."""
    import pandas as pd

    from clipeval.data.sources import read_pairs
    from clipeval.embed.options import EmbedOptions
    from clipeval.pipeline.options import ShardOptions
    from clipeval.pipeline.run import score_pairs_table
    from test_images import _bad_folder

    cases = _bad_folder(tmp_path)
    urls = {"/good.png": "ok", "/missing.png": "http_404", "/slow.png": "timeout", "/text.jpg": "decode_error",
            "/huge-declared.png": "too_large", "/redirect": "ok"}
    rows = [(name, "a picture", status) for name, (_, status) in cases.items()]
    rows += [(_url(server, path), "uma foto 🙂 com legenda em português", status) for path, status in urls.items()]
    rows += [("good.png", "   ", "empty_caption"), ("file:///etc/passwd", "a file url", "bad_scheme")]
    table = pd.DataFrame(rows, columns=["image", "caption", "expected"])
    table.to_csv(tmp_path / "pairs.csv", index=False)

    embed = EmbedOptions(device="cpu", progress=False, batch_size=3, fetch=OPTIONS)
    run = score_pairs_table(tmp_path / "run", read_pairs(tmp_path / "pairs.csv"), [tiny_specs["open_clip"]],
                            ShardOptions(chunk_size=5), embed)

    results = pd.read_csv(tmp_path / "run" / "results.csv", keep_default_na=False)
    assert len(results) == len(table)
    assert results["status"].tolist() == table["expected"].tolist()
    assert results["image"].tolist() == table["image"].tolist()
    assert (results["similarity"] != "").tolist() == (table["expected"] == "ok").tolist()
    assert run.stats["status_counts"]["ok"] == (table["expected"] == "ok").sum()
