"""The finder's web app through Flask's test client: its JSON API, what it refuses, and its security defaults."""

from __future__ import annotations

import io
import json
import urllib.parse

import pytest
from PIL import EpsImagePlugin

from clipeval.finder.app import (
    CSP,
    DEFAULT_HOST,
    MAX_UPLOAD_BYTES,
    create_app,
    exposure_warning,
    is_loopback,
    start_server,
)
from finder_collection import HOSTILE_CAPTION, SHAPES, build_small_index, shape_png

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")
SECRET = "the secret outside the index"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_specs, one_torch_thread):
    root = tmp_path_factory.mktemp("finder-app")
    (root / "secret.txt").write_text(SECRET)
    return build_small_index(root, [tiny_specs["hf-clip"], tiny_specs["open_clip"]])


@pytest.fixture(scope="module")
def finder_index(index_dir):
    from clipeval.finder.search import FinderIndex

    return FinderIndex.open(index_dir)


@pytest.fixture(scope="module")
def client(finder_index):
    return create_app(finder_index).test_client()


def _ids(finder_index) -> list[str]:
    return finder_index.items.loc[finder_index.items["status"] == "ok", "id"].astype(str).tolist()


def _quote(item_id: str) -> str:
    return urllib.parse.quote(item_id, safe="")


# ---- the API answers what the index answers ---------------------------------------------------------------

def test_checkpoints_lists_the_index(client, finder_index):
    answer = client.get("/api/checkpoints").get_json()
    assert answer["checkpoints"] == list(finder_index.checkpoints) and len(answer["checkpoints"]) == 2
    assert answer["images"] == answer["rows"] == len(SHAPES) + 1 and answer["log_queries"] is False


def test_a_coco_like_index_answers_each_image_once_with_its_captions(tmp_path, tiny_specs, one_torch_thread):
    index_dir = build_small_index(tmp_path, [tiny_specs["hf-clip"]], captions=3)
    client = create_app(index_dir).test_client()
    answer = client.get("/api/checkpoints").get_json()
    assert (answer["images"], answer["rows"]) == (len(SHAPES) + 1, 3 * len(SHAPES) + 1)  # missing.png: one row
    (result,) = client.get("/api/search", query_string={"q": "a red circle", "k": 100}).get_json()["results"]
    hits = result["hits"]
    assert len(hits) == len(SHAPES) and len({hit["id"] for hit in hits}) == len(SHAPES)  # each image once
    blue = next(hit for hit in hits if hit["id"] == "images~blue-square.png")
    assert blue["captions"] == ["a blue square", "a blue square, in words 1", "a blue square, in words 2"]


def test_text_search_returns_the_index_ranking(client, finder_index):
    spec = finder_index.checkpoints[1]
    answer = client.get("/api/search", query_string={"q": "a red circle", "checkpoint": spec, "k": 5}).get_json()
    expected = finder_index.search_text("a red circle", checkpoint=spec, k=5)
    (result,) = answer["results"]
    assert result["checkpoint"] == spec and answer["overlap"] is None
    assert [hit["id"] for hit in result["hits"]] == [hit.id for hit in expected]
    assert [hit["score"] for hit in result["hits"]] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert all(hit["thumb"] == "/thumb/" + _quote(hit["id"]) for hit in result["hits"])


def test_default_checkpoint_is_the_first(client, finder_index):
    answer = client.get("/api/search?q=a+square").get_json()
    assert [result["checkpoint"] for result in answer["results"]] == [finder_index.checkpoints[0]]
    assert len(answer["results"][0]["hits"]) == 10  # DEFAULT_K, the collection has 12 ok images


def test_side_by_side_gives_both_rankings_and_their_overlap(client, finder_index):
    first, second = finder_index.checkpoints
    answer = client.get("/api/search", query_string=[("q", "a blue square"), ("checkpoint", first),
                                                     ("checkpoint", second), ("k", "6")]).get_json()
    assert [result["checkpoint"] for result in answer["results"]] == [first, second]
    rankings = [[hit.id for hit in finder_index.search_text("a blue square", checkpoint=spec, k=6)]
                for spec in (first, second)]
    assert [[hit["id"] for hit in result["hits"]] for result in answer["results"]] == rankings
    assert answer["overlap"] == [item for item in rankings[0] if item in set(rankings[1])]


def test_image_search_finds_the_uploaded_image_first(client, finder_index, index_dir):
    name, _, shape = SHAPES[4]
    data = (index_dir.parent / "collection" / "images" / f"{name}-{shape}.png").read_bytes()
    response = client.post("/api/search-image", data={"image": (io.BytesIO(data), "query.png"), "k": "3"},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    hits = response.get_json()["results"][0]["hits"]
    assert hits[0]["id"] == f"images~{name}-{shape}.png" and hits[0]["score"] == pytest.approx(1.0, abs=2e-3)
    assert len(hits) == 3


def test_similar_and_item(client, finder_index):
    item_id = _ids(finder_index)[2]
    answer = client.get(f"/api/similar/{_quote(item_id)}?k=4").get_json()
    expected = finder_index.similar(item_id, k=4)
    assert [hit["id"] for hit in answer["results"][0]["hits"]] == [hit.id for hit in expected]
    item = client.get(f"/api/item/{_quote(item_id)}").get_json()
    assert item["id"] == item_id and item["metadata"]["caption"] == f"a {SHAPES[2][0]} {SHAPES[2][2]}"
    assert item["metadata"]["color"] == SHAPES[2][0]


def test_a_hostile_caption_is_data_in_json(client, finder_index):
    item_id = _ids(finder_index)[0]
    item = client.get(f"/api/item/{_quote(item_id)}").get_json()
    assert item["metadata"]["caption"] == HOSTILE_CAPTION


def test_a_failed_row_has_metadata_and_no_thumbnail(client, finder_index):
    failed = finder_index.items.loc[finder_index.items["status"] != "ok", "id"].astype(str).tolist()
    assert failed == ["images~missing.png"]
    item = client.get(f"/api/item/{_quote(failed[0])}").get_json()
    assert item["metadata"]["status"] != "ok"
    json.dumps(item, allow_nan=False)  # no NaN in the JSON: a browser could not parse it
    response = client.get(f"/thumb/{_quote(failed[0])}")
    assert response.status_code == 404 and "error" in response.get_json()


# ---- thumbnails: only by id ---------------------------------------------------------------------------------

def test_a_thumbnail_is_served_by_id(client, finder_index, index_dir):
    item_id = _ids(finder_index)[1]
    response = client.get(f"/thumb/{_quote(item_id)}")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.data == (index_dir / "thumbnails" / f"{item_id}.jpg").read_bytes()


TRAVERSALS = [
    "/thumb/../manifest.json", "/thumb/..%2fmanifest.json", "/thumb/%2e%2e/manifest.json",
    "/thumb/%2e%2e%2fmanifest.json", "/thumb/%2e%2e%2f%2e%2e%2fsecret.txt", "/thumb/..%2f..%2fsecret.txt",
    "/thumb/%252e%252e%252fmanifest.json", "/thumb//etc/passwd", "/thumb/%2fetc%2fpasswd", "/thumb/etc/passwd",
    "/thumb/thumbnails/images~red-circle.png.jpg", "/thumb/images~red-circle.png.jpg", "/thumb/..", "/thumb/.",
    "/thumb/%00", "/thumb/images~red-circle.png%00", "/static/../manifest.json", "/static/%2e%2e/app.py",
    "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e%2fsecret.txt", "/../secret.txt", "/%2e%2e/secret.txt",
    "/api/item/..%2fmanifest.json", "/api/similar/%2e%2e", "/thumb/C:%5cwindows%5cwin.ini",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_outside_the_thumbnails_is_served(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert SECRET.encode() not in response.data and b"clipeval-index" not in response.data
    assert b"import " not in response.data and b"root:" not in response.data
    assert response.is_json and "error" in response.get_json()


def test_an_absolute_path_as_id_is_not_served(client, index_dir):
    for target in (index_dir / "manifest.json", index_dir.parent / "secret.txt"):
        response = client.get("/thumb/" + _quote(str(target)))
        assert response.status_code == 404 and SECRET.encode() not in response.data


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    for name in ("finder.js", "finder.css", "favicon.svg"):
        assert client.get(f"/static/{name}").status_code == 200


# ---- what is refused ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "status", "words"), [
    ("/api/item/no-such-id", 404, "no item"), ("/api/similar/no-such-id", 404, "no item"),
    ("/thumb/no-such-id", 404, "thumbnail"), ("/api/search?q=", 400, "query"),
    ("/api/search?q=x&k=0", 400, "k must"), ("/api/search?q=x&k=1000", 400, "k must"),
    ("/api/search?q=x&k=ten", 400, "k must"), ("/api/search?q=x&checkpoint=hf:evil", 400, "unknown checkpoint"),
    ("/api/nothing", 404, ""), ("/api/search?q=" + "x" * 1001, 400, "longer"),
])
def test_bad_requests_get_a_json_message(client, path, status, words):
    response = client.get(path)
    assert response.status_code == status and response.is_json
    assert words in response.get_json()["error"]
    assert b"Traceback" not in response.data


def test_an_oversized_upload_is_refused(client):
    big = shape_png((1, 2, 3), "circle") + b"\0" * (MAX_UPLOAD_BYTES + 10)
    response = client.post("/api/search-image", data={"image": (io.BytesIO(big), "big.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and "MB" in response.get_json()["error"]


@pytest.fixture
def no_ghostscript(monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args) or 1 / 0)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    yield calls
    assert not calls, "Ghostscript was invoked"


@pytest.mark.parametrize(("data", "status"), [(EPS, "format_refused"), (b"just some text, not an image", ""),
                                              (b"", "empty_file"), (shape_png((1, 2, 3), "square")[:60], "")],
                         ids=["eps-named-jpg", "text", "empty", "truncated-png"])
def test_a_non_image_upload_is_refused(client, no_ghostscript, data, status):
    response = client.post("/api/search-image", data={"image": (io.BytesIO(data), "photo.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 400, response.data
    message = response.get_json()["error"]
    assert "not a usable image" in message and status in message
    if data is EPS:
        assert "EPS" in message


def test_an_upload_without_the_image_field_is_refused(client):
    response = client.post("/api/search-image", data={"k": "3"}, content_type="multipart/form-data")
    assert response.status_code == 400 and "image" in response.get_json()["error"]


def test_a_cross_origin_post_is_refused(client):
    data = shape_png((1, 2, 3), "square")
    response = client.post("/api/search-image", data={"image": (io.BytesIO(data), "a.png")},
                           content_type="multipart/form-data", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_a_foreign_host_header_is_refused_on_loopback(finder_index):
    client = create_app(finder_index).test_client()
    assert client.get("/api/checkpoints", headers={"Host": "evil.example:8765"}).status_code == 400
    assert "DNS rebinding" in client.get("/", headers={"Host": "127.0.0.1.evil.example"}).get_json()["error"]
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert client.get("/api/checkpoints", headers={"Host": host}).status_code == 200, host
    exposed = create_app(finder_index, host="0.0.0.0").test_client()
    assert exposed.get("/api/checkpoints", headers={"Host": "finder.lan:8765"}).status_code == 200


def test_an_internal_error_is_a_json_message_without_a_trace(finder_index, monkeypatch):
    client = create_app(finder_index).test_client()

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /home/user/model.bin")

    monkeypatch.setattr(finder_index, "search_text", broken)
    response = client.get("/api/search?q=anything")
    assert response.status_code == 500 and response.is_json
    assert "RuntimeError" in response.get_json()["error"]
    assert b"Traceback" not in response.data and b"/home/user" not in response.data


# ---- security defaults ----------------------------------------------------------------------------------------

def test_every_response_carries_the_security_headers(client, finder_index):
    item_id = _ids(finder_index)[0]
    for path in ("/", "/static/finder.js", "/api/checkpoints", f"/thumb/{_quote(item_id)}", "/thumb/nope",
                 "/api/search?q="):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert "default-src 'self'" in CSP and "script-src" not in CSP  # scripts: 'self' only, no inline
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path


def test_the_page_loads_nothing_from_the_network_and_never_writes_markup(client):
    page = client.get("/").get_data(as_text=True)
    script = client.get("/static/finder.js").get_data(as_text=True)
    style = client.get("/static/finder.css").get_data(as_text=True)
    for text in (page, script, style):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "<script>" not in page and " on" + "click=" not in page  # no inline script (CSP would block it)
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "setAttribute("):
        assert sink not in code, sink
    assert "textContent" in script


def test_queries_are_not_logged_by_default(index_dir, finder_index):
    log = index_dir / "queries.jsonl"
    log.unlink(missing_ok=True)
    client = create_app(finder_index).test_client()
    assert client.get("/api/search?q=a+red+circle").status_code == 200
    assert client.get(f"/api/similar/{_quote(_ids(finder_index)[0])}").status_code == 200
    assert not log.exists()


def test_queries_are_logged_with_the_flag(index_dir, finder_index):
    log = index_dir / "queries.jsonl"
    log.unlink(missing_ok=True)
    client = create_app(finder_index, log_queries=True).test_client()
    assert client.get("/api/checkpoints").get_json()["log_queries"] is True
    client.get("/api/search?q=a+green+triangle&k=3")
    data = shape_png((30, 170, 60), "triangle")
    client.post("/api/search-image", data={"image": (io.BytesIO(data), "q.png")}, content_type="multipart/form-data")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    assert [line["kind"] for line in lines] == ["text", "image"]
    assert lines[0]["query"] == "a green triangle" and lines[0]["k"] == 3
    assert [len(top) for top in lines[0]["top"].values()] == [3]
    assert lines[1]["query"].startswith("sha256:")  # the image's digest, never its bytes


def test_the_server_binds_loopback_by_default(index_dir):
    import inspect

    from clipeval.finder import app as finder_app
    from clipeval.jobs.finder import ServeInputs
    from clipeval.jobs.flags import options_from
    from clipeval.runs.cli import build_parser

    assert DEFAULT_HOST == "127.0.0.1"
    assert inspect.signature(finder_app.serve).parameters["host"].default == DEFAULT_HOST
    served_as = options_from(build_parser().parse_args(["serve", str(index_dir)]), ServeInputs)
    assert (served_as.host, served_as.port, served_as.log_queries) == ("127.0.0.1", 8765, False)
    served = start_server(index_dir)
    try:
        assert served.server.server_address[0] == "127.0.0.1" and served.url.startswith("http://127.0.0.1:")
    finally:
        served.stop()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    assert exposure_warning("127.0.0.1") is None
    assert "reachable from other machines" in exposure_warning("0.0.0.0")


def test_clipeval_serve_answers_on_loopback(index_dir):
    import subprocess
    import sys
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "clipeval", "serve", str(index_dir), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {index_dir} at http://127.0.0.1:") and "queries not logged" in line, line
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        with direct.open(url + "api/checkpoints", timeout=60) as response:
            assert json.loads(response.read())["images"] == len(SHAPES) + 1
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "warning" not in process.stderr.read()
