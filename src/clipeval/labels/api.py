"""Caption images with an OpenAI-compatible chat API (a vision-language model), each caption becoming a query.

Off without ``CLIPEVAL_LABEL_API_BASE`` and ``CLIPEVAL_LABEL_API_KEY`` (``CLIPEVAL_LABEL_API_MODEL``: the model).
docs/eval-sets.md ("The labellers in detail") describes the requests, retries, statuses and the reply cache.

The key's invariants: it is sent only to the configured host and never in clear text across a network (a base
that is neither ``https`` nor plain ``http`` on loopback raises :class:`ValueError` before anything is sent);
redirects are never followed (urllib would copy the key to the new host); whatever is stored or shown, the
server's words included, has the key replaced by ``***``. A per-image failure is a status of
:data:`API_STATUSES`, never an exception.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import ipaddress
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit
from urllib.request import HTTPRedirectHandler, ProxyHandler, Request

import pandas as pd

from clipeval import __version__
from clipeval.atomic import write_json
from clipeval.data.fetch import TRANSIENT_HTTP_CODES, Deadline, deadline_opener, is_url, one_line
from clipeval.data.images import decode_image, read_image_bytes
from clipeval.labels.base import LABEL_COLUMNS, LabelRun, empty_labels, image_table, run_stats
from clipeval.paths import DATA_DIR
from clipeval.progress import progress_bar

BASE_ENV, MODEL_ENV, KEY_ENV = "CLIPEVAL_LABEL_API_BASE", "CLIPEVAL_LABEL_API_MODEL", "CLIPEVAL_LABEL_API_KEY"
MAX_REPLY_ENV = "CLIPEVAL_LABEL_API_MAX_REPLY_KB"
MAX_REPLY_KB = 1024  # a caption's reply is a few KiB; a larger one is not read past this
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_PROMPT = ("Write one concise, factual caption of this image: a single sentence describing what is "
                  "visible. Reply with the caption only, no preamble.")
DEFAULT_CACHE_DIR = DATA_DIR / "cache" / "label_api"
OFF_REASON = f"set {BASE_ENV} and {KEY_ENV} to caption with an API"
SENT_AS_IS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
REDACTED = "***"

API_STATUSES: dict[str, str] = {
    "api_off": f"no API is configured ({BASE_ENV} or {KEY_ENV} unset); nothing was sent",
    "api_error": "the API answered with an HTTP error (429 and 5xx after retries) or a redirect (never followed), "
                 "or could not be reached",
    "api_timeout": "no complete reply within the timeout, after retries",
    "api_bad_response": "the reply is not JSON or has no choices[0].message.content text",
}


class _NoRedirects(HTTPRedirectHandler):
    """Follow no redirect: urllib would send the request's headers, the key included, to the new URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError, reported as api_error


_OPENER = deadline_opener(_NoRedirects)  # each reply whole within the timeout (Deadline)
_DIRECT_OPENER = deadline_opener(_NoRedirects, ProxyHandler({}))  # a plain-http loopback base: never via a proxy


@dataclass(frozen=True)
class _Outcome:
    """What happened to one image: its status, reason, caption, and the requests it cost."""

    status: str
    error: str = ""
    caption: str = ""
    requests: int = 0
    cache_hit: bool = False


class ApiCaptioner:
    """An OpenAI-compatible chat API as a labeller: one caption per image.

    Args:
        base, model, key: default ``$CLIPEVAL_LABEL_API_BASE``, ``$CLIPEVAL_LABEL_API_MODEL`` (else
            ``gpt-4o-mini``), ``$CLIPEVAL_LABEL_API_KEY``.
        timeout: seconds allowed for each request's whole reply (connect, headers, body).
        retries: extra attempts after HTTP 408/429/5xx, a timeout or a dropped connection.
        backoff: seconds before the first retry; doubled before each further one.
        cache_dir: where replies are cached; ``None`` disables the cache.
        max_reply_kb: the largest reply read (default ``$CLIPEVAL_LABEL_API_MAX_REPLY_KB``, else
            :data:`MAX_REPLY_KB`); a larger one is ``api_bad_response``, never read whole.

    Raises:
        ValueError: a key is set and the base is not ``https`` (nor ``http`` on a loopback host).
    """

    name = "api"

    def __init__(self, base: str | None = None, model: str | None = None, key: str | None = None,
                 prompt: str = DEFAULT_PROMPT, max_tokens: int = 60, timeout: float = 30.0, retries: int = 2,
                 backoff: float = 0.5, concurrency: int = 4, cache_dir: Path | None = DEFAULT_CACHE_DIR,
                 progress: bool = True, max_reply_kb: float | None = None):
        self.base = (base if base is not None else os.environ.get(BASE_ENV, "")).strip().rstrip("/")
        self.model = model or os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL
        self._key = (key if key is not None else os.environ.get(KEY_ENV, "")).strip()
        self.prompt, self.max_tokens, self.timeout = prompt, max_tokens, timeout
        self.retries, self.backoff, self.concurrency = retries, backoff, max(1, concurrency)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.progress = progress
        self.max_reply_bytes = int(1024 * (max_reply_kb if max_reply_kb is not None
                                           else float(os.environ.get(MAX_REPLY_ENV) or MAX_REPLY_KB)))
        self._opener = _OPENER
        if self.enabled:
            self._opener = _DIRECT_OPENER if _check_base(self.base, self._redact) == "http" else _OPENER

    @property
    def enabled(self) -> bool:
        """Whether both an API base and a key are set, so that requests will be sent."""
        return bool(self.base and self._key)

    def label(self, refs: list[str], base_dir: Path | None = None) -> LabelRun:
        """Caption each readable image; an empty caption leaves the image without a label.

        At most one label per distinct image, ``confidence`` and ``threshold`` NaN; stats add ``api_off``,
        ``requests_made`` and ``cache_hits``.
        """
        started = time.perf_counter()
        refs = list(refs)
        unique = list(dict.fromkeys(refs))
        if self.enabled:
            outcomes = self._caption_all(unique, base_dir)
        else:
            warnings.warn(f"API captioner is off: {OFF_REASON}; no captions were made", stacklevel=2)
            outcomes = {ref: _off_outcome(ref, base_dir) for ref in unique}
        labels = self._labels(unique, outcomes)
        images = image_table(refs, [outcomes[ref].status for ref in refs], [outcomes[ref].error for ref in refs],
                             labels)
        self._warn_failures(images)
        stats = run_stats(labels, images, **self.settings(), api_off=not self.enabled,
                          requests_made=sum(o.requests for o in outcomes.values()),
                          cache_hits=sum(o.cache_hit for o in outcomes.values()), seconds=time.perf_counter() - started)
        return LabelRun(labels, images, stats)

    def settings(self) -> dict:
        """The labeller's parameters, as recorded in stats (the key is never included)."""
        return {"labeller": self.name, "model": self.model, "base": self._redact(self.base), "prompt": self.prompt,
                "max_tokens": self.max_tokens, "timeout": self.timeout, "retries": self.retries,
                "concurrency": self.concurrency, "cache_dir": None if self.cache_dir is None else str(self.cache_dir)}

    def _caption_all(self, refs: list, base_dir: Path | None) -> dict:
        """Caption distinct images on a bounded thread pool; returns ``{ref: _Outcome}``."""
        outcomes = {}
        with (ThreadPoolExecutor(max_workers=self.concurrency) as pool,
              progress_bar(total=len(refs), desc=f"caption {self.model}", unit="image",
                           disable=not self.progress) as bar):
            futures = {pool.submit(self._caption_one, ref, base_dir): ref for ref in refs}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
                bar.update()
        return outcomes

    def _caption_one(self, ref, base_dir: Path | None) -> _Outcome:
        """Read one image, then take its caption from the cache or ask the API."""
        raw = read_image_bytes(ref, base_dir)
        if raw.status != "ok":
            return _Outcome(raw.status, raw.error)
        cache_file = self._cache_file(raw.digest)
        cached = _read_cached(cache_file)
        if cached:
            return _Outcome("ok", caption=cached, cache_hit=True)
        payload = _image_payload(raw.data)
        if isinstance(payload, _Outcome):
            return payload
        outcome = self._ask(self._request(*payload))
        if cache_file is not None and outcome.caption:
            with contextlib.suppress(OSError):  # the cache is an optimisation: a full disk costs a re-ask only
                write_json(cache_file, {"model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens,
                                        "image_sha256": raw.digest, "caption": outcome.caption})
        return outcome

    def _cache_file(self, digest: str) -> Path | None:
        """The cache file of an image's reply under this model, prompt and token limit (``None``: no cache)."""
        if self.cache_dir is None:
            return None
        key = json.dumps([digest, self.model, self.prompt, self.max_tokens])
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.cache_dir / name[:2] / f"{name}.json"

    def _request(self, mime: str, data: bytes) -> Request:
        """The chat-completions request for one image."""
        image_url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        body = {"model": self.model, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": [{"type": "text", "text": self.prompt},
                                                          {"type": "image_url", "image_url": {"url": image_url}}]}]}
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._key}",
                   "User-Agent": f"clipeval/{__version__} (Python urllib)"}
        return Request(f"{self.base}/chat/completions", data=json.dumps(body).encode("utf-8"), headers=headers,
                       method="POST")

    def _redact(self, text) -> str:
        """``text`` with the key (and ``Bearer <key>``) replaced by ``***``: for everything stored or shown."""
        text = str(text)
        if self._key:
            text = text.replace(f"Bearer {self._key}", REDACTED).replace(self._key, REDACTED)
        return text

    def _ask(self, request: Request) -> _Outcome:
        """Send a request, retrying transient failures with exponential backoff; the outcome holds no key."""
        attempt = 0
        while True:
            outcome, transient = self._post(request)
            if not transient or attempt >= self.retries:
                return _Outcome(outcome.status, one_line(self._redact(outcome.error)), self._redact(outcome.caption),
                                requests=attempt + 1)
            time.sleep(self.backoff * 2**attempt)
            attempt += 1

    def _post(self, request: Request) -> tuple[_Outcome, bool]:
        """One attempt; returns the outcome (its texts not yet redacted) and whether a retry might succeed."""
        with Deadline(self.timeout) as deadline:
            outcome = self._reply(request, deadline)
        if deadline.expired:  # retried only when nothing had come: a reply begun but too slow is not asked again
            return _timeout(self.timeout), not deadline.answered
        return outcome

    def _reply(self, request: Request, deadline: Deadline) -> tuple[_Outcome, bool]:
        """:meth:`_post`'s request and reading under ``deadline`` (told when the headers come), the reply read up
        to :attr:`max_reply_bytes`."""
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                deadline.answer()
                body = response.read(self.max_reply_bytes + 1)
            if len(body) > self.max_reply_bytes:
                return _Outcome("api_bad_response", f"the reply is larger than the {self.max_reply_bytes:,}-byte cap "
                                                    f"({MAX_REPLY_ENV}); not read"), False
        except HTTPError as error:
            if error.code in REDIRECT_CODES:
                return _Outcome("api_error", self._redirect_reason(request, error)), False
            transient = error.code in TRANSIENT_HTTP_CODES or error.code >= 500
            return _Outcome("api_error", _http_reason(error)), transient
        except TimeoutError:
            return _timeout(self.timeout), True
        except URLError as error:
            if isinstance(error.reason, TimeoutError):
                return _timeout(self.timeout), True
            return _Outcome("api_error", f"cannot reach {self.base}: {error.reason}"), False
        except (http.client.HTTPException, OSError) as error:
            transient = isinstance(error, (ConnectionResetError, ConnectionAbortedError, http.client.IncompleteRead))
            return _Outcome("api_error", f"{type(error).__name__}: {error}"), transient
        except ValueError as error:  # urllib's verdict on a malformed base URL
            return _Outcome("api_error", f"bad API URL {request.full_url[:200]}: {error}"), False
        except Exception as error:  # noqa: BLE001 - one odd reply must not stop a run
            return _Outcome("api_error", f"{type(error).__name__}: {error}"), False
        if self._key:  # before _parse_reply quotes the body's start, which could cut an echoed key in two
            body = body.replace(self._key.encode("utf-8"), REDACTED.encode("ascii"))
        return _parse_reply(body), False

    def _redirect_reason(self, request: Request, error: HTTPError) -> str:
        """Why a redirect was not followed, naming its target."""
        with error:
            headers = error.headers or {}
            location = headers.get("Location") or headers.get("URI") or ""
        target = urljoin(request.full_url, location) if location else "(no Location)"
        return (f"the API redirected to {target[:200]} (HTTP {error.code}); not followed, the key is only sent to "
                f"{urlsplit(self.base).netloc}")

    def _labels(self, refs: list, outcomes: dict) -> pd.DataFrame:
        """One label row per image with a non-empty caption, in input order."""
        rows = [{"image": ref, "text": outcomes[ref].caption, "confidence": math.nan, "labeller": self.name,
                 "model": self.model, "threshold": math.nan} for ref in refs if outcomes[ref].caption]
        return pd.DataFrame(rows, columns=list(LABEL_COLUMNS)) if rows else empty_labels()

    def _warn_failures(self, images: pd.DataFrame) -> None:
        """One warning when requests failed, with the counts per status and the first reason."""
        failed = images[images["status"].isin(["api_error", "api_timeout", "api_bad_response"])]
        if len(failed):
            counts = ", ".join(f"{status}: {n}" for status, n in failed["status"].value_counts().items())
            warnings.warn(self._redact(f"API captioner ({self.model} at {self.base}): {len(failed)} of {len(images)} "
                                       f"images got no caption ({counts}); first: {failed['error'].iloc[0]}"),
                          stacklevel=3)


def _is_loopback_host(host: str) -> bool:
    """Whether a URL's host name is ``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _check_base(base: str, redact) -> str:
    """The base URL's scheme, once it is one the key may be sent to: ``https``, or ``http`` on loopback.

    Raises:
        ValueError: any other base, saying why (``redact`` keeps a key pasted into the base out of it).
    """
    shown = redact(repr(base))
    try:
        parts = urlsplit(base)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
    except ValueError as error:
        raise ValueError(f"{BASE_ENV} {shown} is not a valid URL: {redact(error)}") from None
    if host and (scheme == "https" or (scheme == "http" and _is_loopback_host(host))):
        return scheme
    why = ("has no host" if scheme in ("http", "https") and not host else
           "would send the API key in clear text" if scheme == "http" else f"uses {scheme or 'no scheme'}, not https")
    raise ValueError(f"refusing the API base {shown} ({BASE_ENV}): it {why}. The key is only sent over https, "
                     f"or plain http to a loopback host (127.0.0.0/8, ::1, localhost)")


def _off_outcome(ref, base_dir: Path | None) -> _Outcome:
    """An image's outcome when the API is off: its read status, or ``api_off`` (URLs are not fetched)."""
    if not (isinstance(ref, str) and is_url(ref.strip())):
        raw = read_image_bytes(ref, base_dir)
        if raw.status != "ok":
            return _Outcome(raw.status, raw.error)
    return _Outcome("api_off", OFF_REASON)


def _read_cached(path: Path | None) -> str:
    """The caption cached in ``path``; empty when there is no cache, no file or an unreadable one."""
    if path is None:
        return ""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return str(json.loads(path.read_text(encoding="utf-8")).get("caption") or "")
    return ""


def _image_payload(data: bytes) -> tuple[str, bytes] | _Outcome:
    """The MIME type and bytes to send: the file as is when the API takes its format, else a PNG.

    An image that does not decode gets its decode status instead (nothing is sent for it); the
    format is the one :func:`~clipeval.data.images.decode_image` read, so only the allowed formats
    are ever opened (``format_refused`` otherwise: :data:`clipeval.data.images.IMAGE_FORMATS`).
    """
    loaded = decode_image(data)
    if loaded.status != "ok":
        return _Outcome(loaded.status, loaded.error)
    if loaded.format in SENT_AS_IS:
        return SENT_AS_IS[loaded.format], data
    buffer = io.BytesIO()
    loaded.image.save(buffer, "PNG")
    return "image/png", buffer.getvalue()


def _parse_reply(body: bytes) -> _Outcome:
    """The caption in a chat-completions reply, or ``api_bad_response`` saying what is wrong."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        return _Outcome("api_bad_response", one_line(f"no choices[0].message.content in the reply "
                                                      f"({type(error).__name__}: {error}): {body[:120]!r}"))
    if isinstance(content, list):  # content parts, as some compatible servers reply
        content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    if content is not None and not isinstance(content, str):
        return _Outcome("api_bad_response", f"message content is {type(content).__name__}, not text")
    caption = " ".join((content or "").split())
    return _Outcome("ok", "" if caption else "the API returned an empty caption", caption)


def _http_reason(error: HTTPError) -> str:
    """``HTTP <code> <reason>``, plus the API's own error message when the body has one (not yet redacted)."""
    with error, contextlib.suppress(OSError, ValueError, LookupError, TypeError):
        detail = json.loads(error.read(4096))["error"]["message"]
        return f"HTTP {error.code} {error.reason}: {detail}"
    return f"HTTP {error.code} {error.reason}"


def _timeout(seconds: float) -> _Outcome:
    return _Outcome("api_timeout", f"no whole reply within {seconds:g} s")

