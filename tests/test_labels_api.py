"""The API captioner against a stub chat-completions server on 127.0.0.1: replies, failures, cache, concurrency."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clipeval.labels.api import API_STATUSES, DEFAULT_MODEL, OFF_REASON, ApiCaptioner
from http_stub import serving

KEY = "test-key"
MODEL = "stub-vision-model"
SLOW_S = 1.5  # the slow reply's delay, well above CLIENT_TIMEOUT_S
CLIENT_TIMEOUT_S = 0.5


def _reply(content) -> bytes:
    return json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                      ).encode()


def _image_sha(request: dict) -> str:
    """The SHA-256 of the image bytes in a request's data URL."""
    url = request["messages"][0]["content"][1]["image_url"]["url"]
    return hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Answers by ``self.server.mode``; records each request and the most requests in flight at once."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            hit = len(server.requests)
        try:
            self._answer(server.mode, body, hit)
        finally:
            with server.lock:
                server.in_flight -= 1

    def _answer(self, mode: str, body: dict, hit: int):
        caption = f"  a photo\n of image {_image_sha(body)[:8]}  "
        if mode == "ok":
            self._send(200, _reply(caption))
        elif mode == "slow_ok":
            time.sleep(0.2)
            self._send(200, _reply(caption))
        elif mode == "error":
            self._send(500, json.dumps({"error": {"message": "the stub is broken"}}).encode())
        elif mode == "flaky":  # 503 first, then a caption
            self._send(503, b"busy") if hit == 1 else self._send(200, _reply(caption))
        elif mode == "timeout":
            time.sleep(SLOW_S)
            self._send(200, _reply(caption))
        elif mode == "malformed":
            self._send(200, b'{"choices": [{"message": ')
        elif mode == "no_choices":
            self._send(200, json.dumps({"choices": []}).encode())
        elif mode == "empty":
            self._send(200, _reply("   "))

    def _send(self, code: int, body: bytes):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # the client abandons slow replies on purpose
        pass


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.mode, httpd.requests, httpd.lock = "ok", [], threading.Lock()
    httpd.in_flight = httpd.max_in_flight = 0
    with serving(httpd):
        yield httpd


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No API settings from the environment, and no proxy between the client and the stub."""
    for name in ("CLIPEVAL_LABEL_API_BASE", "CLIPEVAL_LABEL_API_MODEL", "CLIPEVAL_LABEL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _captioner(server, **options) -> ApiCaptioner:
    settings = dict(base=_base(server), model=MODEL, key=KEY, timeout=5.0, retries=0, backoff=0.01,
                    cache_dir=None, progress=False)
    return ApiCaptioner(**{**settings, **options})


def _images(folder, n: int, fmt: str = "PNG", suffix: str = "png") -> list[str]:
    """``n`` distinct small images saved in ``folder``; their file names."""
    names = []
    for i in range(n):
        name = f"image{i}.{suffix}"
        Image.new("RGB", (16 + i, 12), (20 * i % 256, 100, 200)).save(folder / name, fmt)
        names.append(name)
    return names


def _expected_caption(path) -> str:
    return f"a photo of image {hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def test_success_sends_an_openai_request_and_keeps_the_caption(server, tmp_path):
    names = _images(tmp_path, 2) + _images(tmp_path, 1, "JPEG", "jpg")
    run = _captioner(server).label(names, tmp_path)

    assert list(run.images["status"]) == ["ok"] * 3
    assert list(run.images["n_labels"]) == [1, 1, 1]
    assert list(run.labels["image"]) == names
    assert list(run.labels["text"]) == [_expected_caption(tmp_path / name) for name in names]
    assert set(run.labels["labeller"]) == {"api"} and set(run.labels["model"]) == {MODEL}
    assert run.labels["confidence"].isna().all() and run.labels["threshold"].isna().all()
    assert run.stats["requests_made"] == 3 and run.stats["cache_hits"] == 0 and run.stats["api_off"] is False
    assert KEY not in json.dumps(run.stats)

    request = next(r for r in server.requests if _image_sha(r["body"]) == hashlib.sha256(
        (tmp_path / "image0.jpg").read_bytes()).hexdigest())
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["model"] == MODEL and body["max_tokens"] == 60
    text, image = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "user" and text["type"] == "text" and "caption" in text["text"]
    header, data = image["image_url"]["url"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    assert base64.b64decode(data) == (tmp_path / "image0.jpg").read_bytes()


def test_other_formats_are_sent_as_png(server, tmp_path):
    (name,) = _images(tmp_path, 1, "BMP", "bmp")
    run = _captioner(server).label([name], tmp_path)

    assert run.images["status"].tolist() == ["ok"]
    header, data = server.requests[0]["body"]["messages"][0]["content"][1]["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as sent:
        assert sent.format == "PNG" and sent.size == (16, 12)


def test_configuration_comes_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("CLIPEVAL_LABEL_API_BASE", _base(server) + "/")
    monkeypatch.setenv("CLIPEVAL_LABEL_API_MODEL", MODEL)
    monkeypatch.setenv("CLIPEVAL_LABEL_API_KEY", KEY)
    captioner = ApiCaptioner()
    assert (captioner.base, captioner.model, captioner.enabled) == (_base(server), MODEL, True)
    assert ApiCaptioner(model="other").model == "other"
    monkeypatch.delenv("CLIPEVAL_LABEL_API_MODEL")
    assert ApiCaptioner().model == DEFAULT_MODEL
    assert not ApiCaptioner(key="").enabled


def test_http_error_is_retried_then_reported(server, tmp_path):
    server.mode = "error"
    names = _images(tmp_path, 1)
    with pytest.warns(UserWarning, match="api_error: 1"):
        run = _captioner(server, retries=2).label(names, tmp_path)

    assert len(server.requests) == 3  # one try and two retries
    assert run.images["status"].tolist() == ["api_error"]
    assert run.images["error"].iloc[0].startswith("HTTP 500")
    assert "the stub is broken" in run.images["error"].iloc[0]
    assert len(run.labels) == 0 and run.stats["requests_made"] == 3


def test_a_transient_error_then_success_gives_the_caption(server, tmp_path):
    server.mode = "flaky"
    names = _images(tmp_path, 1)
    run = _captioner(server, retries=2).label(names, tmp_path)

    assert run.images["status"].tolist() == ["ok"]
    assert run.labels["text"].tolist() == [_expected_caption(tmp_path / names[0])]
    assert len(server.requests) == 2 and run.stats["requests_made"] == 2


def test_a_slow_server_gives_api_timeout(server, tmp_path):
    server.mode = "timeout"
    names = _images(tmp_path, 1)
    started = time.monotonic()
    with pytest.warns(UserWarning, match="api_timeout"):
        run = _captioner(server, timeout=CLIENT_TIMEOUT_S, retries=1).label(names, tmp_path)

    assert run.images["status"].tolist() == ["api_timeout"]
    assert len(server.requests) == 2 and run.stats["requests_made"] == 2
    assert time.monotonic() - started < 2 * SLOW_S


@pytest.mark.parametrize("mode", ["malformed", "no_choices"])
def test_a_malformed_reply_gives_api_bad_response(server, tmp_path, mode):
    server.mode = mode
    names = _images(tmp_path, 1)
    with pytest.warns(UserWarning, match="api_bad_response"):
        run = _captioner(server, retries=2).label(names, tmp_path)

    assert run.images["status"].tolist() == ["api_bad_response"]
    assert "choices[0].message.content" in run.images["error"].iloc[0]
    assert len(server.requests) == 1  # a bad reply is not retried
    assert len(run.labels) == 0


def test_an_empty_caption_leaves_the_image_unlabelled(server, tmp_path):
    server.mode = "empty"
    names = _images(tmp_path, 1)
    run = _captioner(server).label(names, tmp_path)

    assert run.images["status"].tolist() == ["no_label"]
    assert run.images["error"].tolist() == ["the API returned an empty caption"]
    assert len(run.labels) == 0


def test_a_repeated_image_is_asked_once(server, tmp_path):
    names = _images(tmp_path, 1)
    run = _captioner(server).label([names[0], names[0]], tmp_path)

    assert len(server.requests) == 1 and len(run.labels) == 1
    assert run.images["n_labels"].tolist() == [1, 1]


def test_unreadable_images_keep_their_status_and_send_nothing(server, tmp_path):
    names = _images(tmp_path, 1)
    (tmp_path / "text.png").write_text("not an image")
    run = _captioner(server).label([*names, "missing.png", "text.png"], tmp_path)

    assert run.images["status"].tolist() == ["ok", "missing", "decode_error"]
    assert len(server.requests) == 1


def test_no_key_is_off_and_sends_nothing(server, tmp_path):
    names = _images(tmp_path, 2)
    with pytest.warns(UserWarning, match="CLIPEVAL_LABEL_API_KEY"):
        run = _captioner(server, key=None).label([*names, "missing.png", "https://example.invalid/a.png"], tmp_path)

    assert server.requests == []
    assert run.images["status"].tolist() == ["api_off", "api_off", "missing", "api_off"]
    assert run.images["error"].iloc[0] == OFF_REASON
    assert len(run.labels) == 0
    assert run.stats["api_off"] is True and run.stats["requests_made"] == 0


def test_no_base_is_off_too(tmp_path):
    names = _images(tmp_path, 1)
    with pytest.warns(UserWarning, match="CLIPEVAL_LABEL_API_BASE"):
        run = ApiCaptioner(key=KEY, cache_dir=None, progress=False).label(names, tmp_path)
    assert run.images["status"].tolist() == ["api_off"] and run.stats["api_off"] is True


def test_an_unreachable_api_is_an_error_not_an_exception(tmp_path):
    names = _images(tmp_path, 1)
    with pytest.warns(UserWarning, match="api_error"):
        run = ApiCaptioner(base="http://127.0.0.1:9/v1", key=KEY, retries=0, cache_dir=None,
                           progress=False).label(names, tmp_path)
    assert run.images["status"].tolist() == ["api_error"]
    assert "cannot reach" in run.images["error"].iloc[0]


def test_replies_are_cached_on_disk(server, tmp_path):
    names = _images(tmp_path, 3)
    cache = tmp_path / "cache"
    first = _captioner(server, cache_dir=cache).label(names, tmp_path)
    assert len(server.requests) == 3 and first.stats["cache_hits"] == 0
    assert len(list(cache.rglob("*.json"))) == 3

    second = _captioner(server, cache_dir=cache).label(names, tmp_path)
    assert len(server.requests) == 3  # no new request
    assert second.stats["cache_hits"] == 3 and second.stats["requests_made"] == 0
    assert second.labels.equals(first.labels)

    _captioner(server, cache_dir=cache, prompt="Name the main object.").label(names, tmp_path)
    assert len(server.requests) == 6  # another prompt is another cache key


def test_failures_are_not_cached(server, tmp_path):
    names = _images(tmp_path, 1)
    cache = tmp_path / "cache"
    server.mode = "error"
    with pytest.warns(UserWarning):
        _captioner(server, cache_dir=cache).label(names, tmp_path)
    server.mode = "ok"
    run = _captioner(server, cache_dir=cache).label(names, tmp_path)
    assert run.images["status"].tolist() == ["ok"] and run.stats["cache_hits"] == 0
    assert len(server.requests) == 2


def test_concurrency_is_bounded(server, tmp_path):
    server.mode = "slow_ok"
    names = _images(tmp_path, 6)
    run = _captioner(server, concurrency=2).label(names, tmp_path)

    assert run.images["status"].tolist() == ["ok"] * 6
    assert len(server.requests) == 6
    assert server.max_in_flight == 2  # parallel, but never more than the bound


def test_every_api_status_is_documented():
    assert set(API_STATUSES) == {"api_off", "api_error", "api_timeout", "api_bad_response"}
    assert all(isinstance(meaning, str) and meaning for meaning in API_STATUSES.values())
