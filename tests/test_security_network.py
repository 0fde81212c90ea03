"""Network fault injection: the URL fetcher refuses non-public addresses (redirects included), and the API
captioner sends its key only to its own host (https, or plain http on loopback) and never stores it.

Everything runs against stub servers on 127.0.0.1. Sockets are guarded: a connection to anything but a
loopback address is recorded and refused by the test, so nothing here reaches the real network; the one
exception, :data:`PUBLIC_ADDRESS`, is routed by the guard to a stub on 127.0.0.1, so a "public" host that
redirects can be served on any machine (no second loopback address to bind).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clipeval.data import fetch
from clipeval.data.fetch import FetchOptions, fetch_url
from clipeval.labels.api import ApiCaptioner
from http_stub import serving

KEY = "sk-test-SECRET-0123456789abcdef"
PUBLIC_ADDRESS = "93.184.216.34"  # public to the fetcher's policy; the guarded socket routes it to 127.0.0.1
_REAL_SOCKET = socket.socket
_REAL_GETADDRINFO = socket.getaddrinfo


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


def _caption_reply(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


class _Handler(BaseHTTPRequestHandler):
    """Records every request (method, path, headers, body); answers with ``self.server.answer(handler)``."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                         "body": body})
        code, headers, payload, reason = self.server.answer(self)
        self.send_response(code, reason)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@contextlib.contextmanager
def _stub(answer):
    """A stub server on 127.0.0.1 answering each request with ``answer(handler) -> (code, headers, body[, reason])``."""
    httpd = _Server(("127.0.0.1", 0), _Handler)

    def full(handler):
        code, headers, body, *reason = answer(handler)
        return code, headers, body, (reason[0] if reason else None)

    httpd.answer, httpd.requests, httpd.lock = full, [], threading.Lock()
    with serving(httpd):
        yield httpd


def _origin(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def _public_origin(server) -> str:
    """The stub's origin under :data:`PUBLIC_ADDRESS`: a public host to the fetcher, the stub to the guard."""
    return f"http://{PUBLIC_ADDRESS}:{server.server_address[1]}"


def _serve_png(handler):
    return 200, {"Content-Type": "image/png"}, PNG


def _redirect_to(target: str, code: int = 302):
    return lambda handler: (code, {"Location": target}, b"")


def _is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback
    return False


@pytest.fixture(autouse=True)
def connects(monkeypatch):
    """Every address a client socket connects to; connecting anywhere but loopback is refused by the test,
    except :data:`PUBLIC_ADDRESS`, which is connected to 127.0.0.1 on the same port."""
    attempts: list = []

    class _GuardedSocket(_REAL_SOCKET):
        def connect(self, address):
            attempts.append(address)
            if str(address[0]) == PUBLIC_ADDRESS:
                return super().connect(("127.0.0.1", *address[1:]))
            if not _is_loopback(str(address[0])):
                raise ConnectionRefusedError(f"the test refuses to connect to {address[0]}")
            return super().connect(address)

    monkeypatch.setattr(socket, "socket", _GuardedSocket)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    for name in ("CLIPEVAL_LABEL_API_BASE", "CLIPEVAL_LABEL_API_MODEL", "CLIPEVAL_LABEL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return attempts


def _options(**overrides) -> FetchOptions:
    return FetchOptions(**{"timeout": 1.0, "retries": 0, "backoff": 0.01, "image_cache_dir": None, **overrides})


# --- the URL fetcher ----------------------------------------------------------------------------------

def test_a_loopback_url_is_refused_by_default_and_fetched_with_the_opt_in():
    with _stub(_serve_png) as server:
        url = f"{_origin(server)}/image.png"
        refused = fetch_url(url, _options())
        assert (refused.status, refused.data) == ("private_address", None)
        assert "127.0.0.1" in refused.error and "--allow-private-urls" in refused.error
        assert server.requests == []  # refused before any byte was sent

        allowed = fetch_url(url, _options(allow_private_urls=True))
        assert (allowed.status, allowed.data) == ("ok", PNG)
        assert len(server.requests) == 1


@pytest.mark.parametrize("target_host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
def test_a_redirect_to_a_loopback_address_is_refused(target_host):
    with _stub(_serve_png) as internal:
        target = f"http://{target_host}:{internal.server_address[1]}/internal.png"
        with _stub(_redirect_to(target)) as public:
            result = fetch_url(f"{_public_origin(public)}/image.png", _options())

            assert (result.status, result.data) == ("private_address", None)
            assert len(public.requests) == 1  # the public host was asked...
            assert internal.requests == []  # ...and the internal one never
            assert fetch_url(f"{_public_origin(public)}/image.png", _options(allow_private_urls=True)).status == "ok"
            assert len(internal.requests) == 1  # the opt-in follows the redirect


def test_a_redirect_to_the_cloud_metadata_address_is_refused_without_connecting(connects):
    with _stub(_redirect_to("http://169.254.169.254/latest/meta-data/iam/security-credentials/")) as public:
        started = time.monotonic()
        result = fetch_url(f"{_public_origin(public)}/image.png", _options(retries=2))

    assert (result.status, result.data) == ("private_address", None)
    assert "169.254.169.254" in result.error
    assert not any(str(address[0]) == "169.254.169.254" for address in connects)
    assert [str(address[0]) for address in connects] == [PUBLIC_ADDRESS]  # one request, not retried
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("resolved", [["127.0.0.1"], ["10.0.0.7"], ["::1"], ["::ffff:169.254.169.254"],
                                      ["93.184.216.34", "192.168.1.20"]])
def test_a_hostname_resolving_to_a_private_address_is_refused(monkeypatch, connects, resolved):
    with _stub(_serve_png) as server:
        port = server.server_address[1]

        def getaddrinfo(host, *args, **kwargs):
            if str(host).rstrip(".") == "images.example.test":
                return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                         (ip, port, 0, 0) if ":" in ip else (ip, port)) for ip in resolved]
            return _REAL_GETADDRINFO(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        result = fetch_url(f"http://images.example.test:{port}/image.png", _options())

        assert (result.status, result.data) == ("private_address", None)
        assert "images.example.test" in result.error
        assert connects == [] and server.requests == []


def test_the_address_policy_knows_the_private_ranges():
    is_public = getattr(fetch, "is_public_address", None)
    assert is_public is not None, "clipeval.data.fetch.is_public_address is missing"
    private = ["127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
               "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
               "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::",
               "64:ff9b::a9fe:a9fe"]
    public = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    assert [ip for ip in private if is_public(ipaddress.ip_address(ip))] == []
    assert [ip for ip in public if not is_public(ipaddress.ip_address(ip))] == []


def test_allow_private_urls_is_an_off_by_default_command_line_flag():
    from clipeval.jobs.flags import add_options, options_from

    parser = argparse.ArgumentParser()
    add_options(parser, FetchOptions)
    assert options_from(parser.parse_args([]), FetchOptions).allow_private_urls is False
    assert options_from(parser.parse_args(["--allow-private-urls"]), FetchOptions).allow_private_urls is True


def test_private_address_is_a_documented_row_status():
    from clipeval.data.images import STATUSES

    assert "private_address" in STATUSES and "--allow-private-urls" in STATUSES["private_address"]


# --- the API captioner --------------------------------------------------------------------------------

def _image_files(folder, n: int = 1) -> list[str]:
    names = []
    for i in range(n):
        Image.new("RGB", (12 + i, 10), (30 * i, 60, 90)).save(folder / f"image{i}.png")
        names.append(f"image{i}.png")
    return names


def _captioner(base: str, **options) -> ApiCaptioner:
    settings = dict(base=base, model="stub-model", key=KEY, timeout=2.0, retries=2, backoff=0.01, cache_dir=None,
                    progress=False)
    return ApiCaptioner(**{**settings, **options})


def _label(captioner: ApiCaptioner, names, folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = captioner.label(names, folder)
    return run, [str(warning.message) for warning in caught]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_an_api_redirect_is_not_followed_and_the_key_goes_nowhere_else(tmp_path, code):
    stolen = (200, {"Content-Type": "application/json"}, _caption_reply("a stolen caption"))
    with _stub(lambda handler: stolen) as other:
        target = f"{_origin(other)}/v1/chat/completions"
        with _stub(_redirect_to(target, code)) as api:
            run, messages = _label(_captioner(f"{_origin(api)}/v1"), _image_files(tmp_path), tmp_path)

    assert other.requests == []  # the second host got no request, so no key
    assert len(api.requests) == 1  # a redirect is not retried either
    assert api.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert run.images["status"].tolist() == ["api_error"] and len(run.labels) == 0
    error = run.images["error"].iloc[0]
    assert "redirected to" in error and target in error and "not followed" in error
    assert any("api_error: 1" in message for message in messages)


@pytest.mark.parametrize("base", ["http://api.example.test/v1", "http://10.0.0.5:8000/v1",
                                  "http://api.example.test:{port}/v1", "ftp://api.example.test/v1"])
def test_a_key_is_never_sent_in_clear_text_to_a_remote_host(monkeypatch, tmp_path, base):
    with _stub(lambda handler: (200, {"Content-Type": "application/json"}, _caption_reply("a caption"))) as server:
        port = server.server_address[1]

        def getaddrinfo(host, *args, **kwargs):  # the "remote" host is the stub, to see what it would receive
            if str(host).rstrip(".") == "api.example.test":
                return _REAL_GETADDRINFO("127.0.0.1", port, *args[1:], **kwargs)
            return _REAL_GETADDRINFO(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        names = _image_files(tmp_path)
        with pytest.raises(ValueError, match="https") as refused:
            _captioner(base.format(port=port)).label(names, tmp_path)
        assert KEY not in str(refused.value)
        assert server.requests == []

    for fine in ("https://api.example.test/v1", "http://127.0.0.1:9/v1", "http://127.3.4.5:9/v1",
                 "http://localhost:9/v1", "http://[::1]:9/v1"):
        assert _captioner(fine).enabled


def _echo_answer(mode: str):
    def answer(handler):
        if mode == "error_body":
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}. You sent "
                                                    f"{handler.headers['Authorization']}"}}).encode()
            return 401, {"Content-Type": "application/json"}, body
        if mode == "error_reason":
            return 500, {"Content-Type": "text/plain"}, b"", f"Bad key {KEY}"
        if mode == "bad_reply":
            return 200, {"Content-Type": "application/json"}, json.dumps({"echo": KEY}).encode()
        return 200, {"Content-Type": "application/json"}, _caption_reply(f"your key is {KEY}")
    return answer


@pytest.mark.parametrize("mode", ["error_body", "error_reason", "bad_reply", "caption"])
def test_a_key_echoed_by_the_api_is_never_stored_or_printed(tmp_path, mode):
    with _stub(_echo_answer(mode)) as api:
        run, messages = _label(_captioner(f"{_origin(api)}/v1", retries=0), _image_files(tmp_path), tmp_path)
    assert api.requests and api.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"

    stored = [run.images.to_csv(), run.labels.to_csv(), json.dumps(run.stats, default=str), *messages]
    assert [text for text in stored if KEY in text] == []
    shown = run.labels["text"].tolist() if mode == "caption" else run.images["error"].tolist()
    assert any("***" in text for text in shown), shown
