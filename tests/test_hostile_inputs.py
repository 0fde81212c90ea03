"""Small file, large cost: hostile inputs bounded in bytes, rows and time (issue 36).

Each test plants one of the audit's findings in ``tmp_path``, kept tiny on disk (zeros in a compressed
tar, a header that declares more than it holds), and checks the read ends fast with a status or a
failed shard rather than memory or minutes spent.
"""

import io
import lzma
import struct
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest

from clipeval.data.images import STATUSES, read_image_bytes
from clipeval.data.options import PairsTableError, ShardLimits
from clipeval.data.shards import ShardReadError, read_shard
from clipeval.data.sources import read_pairs
from hostile_shards import MiB, good_members, hostile_folder, member_bytes, png, tar_bytes, write

# ---- 1. pax headers: CPython's quadratic parsing (CVE-2024-6232) never runs on a hostile one -----------

def test_a_pax_header_of_digits_fails_the_shard_at_once(tmp_path):
    payload = b"1" * 64_000  # 1.3 s at 32,000 digits in CPython 3.11.7's parser, four times as long per doubling
    shard = write(tmp_path / "pax.tar", tar_bytes(member_bytes("././@PaxHeader", payload, tarfile.XHDTYPE),
                                                  good_members()))
    started = time.perf_counter()
    with pytest.raises(ShardReadError, match="pax header"):
        read_shard(shard)
    assert time.perf_counter() - started < 1.0  # the old parser: about 5 s


def test_a_pax_header_over_the_header_cap_is_refused_before_it_is_read(tmp_path):
    record = b"path=" + b"a" * (2 * MiB)
    record = str(len(record) + 9).encode() + b" " + record + b"\n"
    shard = write(tmp_path / "pax.tar", tar_bytes(member_bytes("././@PaxHeader", record, tarfile.XHDTYPE),
                                                  good_members()))
    with pytest.raises(ShardReadError, match="header cap"):
        read_shard(shard)


def test_honest_pax_headers_still_read(tmp_path):
    shard = tmp_path / "honest.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in (("é" * 150 + ".png", png()), ("é" * 150 + ".txt", "ünïcode".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    table = read_shard(shard)
    assert table["caption"].tolist() == ["ünïcode"]
    assert read_image_bytes(table["image"][0]).status == "ok"


# ---- 2. a GNU long name is capped before it is read ------------------------------------------------------------

def test_a_gnu_long_name_over_the_header_cap_fails_the_shard_unread(tmp_path):
    raw = tar_bytes(member_bytes("././@LongLink", b"a" * (2 * MiB) + b".jpg", tarfile.GNUTYPE_LONGNAME),
                    member_bytes("short.jpg", png()), good_members())
    shard = write(tmp_path / "long.tar", lzma.compress(raw))
    assert shard.stat().st_size < 64 * 1024
    with pytest.raises(ShardReadError, match="header cap"):
        read_shard(shard)


# ---- 3. bytes per shard, rows per shard, captions per sample ----------------------------------------------------

def test_many_members_under_the_member_cap_trip_the_shard_cap(tmp_path):
    members = [member_bytes(f"{number:03d}.jpg", bytes(MiB - 1024)) for number in range(12)]
    shard = write(tmp_path / "many.tar", lzma.compress(tar_bytes(*members, good_members())))
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, max_member_bytes=MiB, limits=ShardLimits(shard_bytes=8 * MiB))


def test_rows_per_shard_are_capped(tmp_path):
    members = [member_bytes(f"{number:03d}.txt", b"caption") for number in range(5)]
    shard = write(tmp_path / "rows.tar", tar_bytes(*members))
    assert len(read_shard(shard, limits=ShardLimits(rows=5))) == 5
    with pytest.raises(ShardReadError, match="--max-shard-rows"):
        read_shard(shard, limits=ShardLimits(rows=4))


def test_a_sample_listing_too_many_captions_is_one_row_with_a_status(tmp_path):
    captions = b'{"captions": [' + b",".join([b'"x"'] * 5_000) + b"]}"
    shard = write(tmp_path / "captions.tar", tar_bytes(member_bytes("many.png", png()),
                                                       member_bytes("many.json", captions), good_members()))
    table = read_shard(shard, limits=ShardLimits(captions=1000))
    assert table["uid"].tolist() == ["captions/many", "captions/fine"]
    refused = read_image_bytes(table["image"][0])
    assert refused.status == "too_many_captions" and "5,000" in refused.error and "--max-captions" in refused.error
    assert "too_many_captions" in STATUSES


def test_a_csv_shard_over_the_row_cap_fails(tmp_path):
    shard = tmp_path / "rows.csv"
    pd.DataFrame({"image": ["a.png"] * 6, "caption": ["c"] * 6}).to_csv(shard, index=False)
    assert len(read_shard(shard, limits=ShardLimits(rows=6))) == 6
    with pytest.raises(ShardReadError, match="--max-shard-rows"):
        read_shard(shard, limits=ShardLimits(rows=5))


def test_a_csv_shard_over_the_byte_cap_fails_before_it_is_parsed(tmp_path):
    shard = tmp_path / "big.csv"
    shard.write_text("image,caption\n" + "a.png,caption\n" * 100_000)
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, limits=ShardLimits(shard_bytes=MiB))


# ---- 5. parquet cells checked from the file's metadata before they are read --------------------------------

def test_a_parquet_cell_over_the_member_cap_is_refused_from_the_metadata(tmp_path):
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = tmp_path / "cells.parquet"
    with pq.ParquetWriter(shard, pa.schema([("image", pa.binary()), ("caption", pa.string())])) as writer:
        writer.write_table(pa.table({"image": [bytes(8 * MiB)], "caption": ["zeros"]}))  # one row group, one row
        writer.write_table(pa.table({"image": [png()], "caption": ["a red square"]}))
    tracemalloc.start()
    try:
        table = read_shard(shard, max_member_bytes=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB  # the 8 MiB cell was never read
    assert table["caption"].tolist() == ["zeros", "a red square"]
    refused = read_image_bytes(table["image"][0])
    assert refused.status == "member_too_large" and "metadata" in refused.error
    assert read_image_bytes(table["image"][1]).status == "ok"


def test_a_parquet_shard_over_the_shard_cap_fails_before_it_is_read(tmp_path):
    shard = tmp_path / "big.parquet"
    pd.DataFrame({"image": [bytes([row]) + bytes(MiB // 2) for row in range(6)], "caption": ["c"] * 6}).to_parquet(
        shard, compression="gzip")
    assert shard.stat().st_size < MiB // 4
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, limits=ShardLimits(shard_bytes=2 * MiB))
    with pytest.raises(ShardReadError, match="--max-shard-rows"):
        read_shard(shard, limits=ShardLimits(rows=5))


def test_a_parquet_row_listing_too_many_captions_is_one_row(tmp_path):
    shard = tmp_path / "lists.parquet"
    pd.DataFrame({"image": [png(), png()], "caption": [["x"] * 50, ["a", "b"]]}).to_parquet(shard)
    table = read_shard(shard, limits=ShardLimits(captions=10))
    assert pd.isna(table["caption"][0]) and table["caption"].tolist()[1:] == ["a", "b"]
    assert read_image_bytes(table["image"][0]).status == "too_many_captions"


# ---- 4. every compressed container under a memory limit, whatever its magic bytes ---------------------------

def test_a_legacy_lzma_tar_declaring_a_huge_dictionary_is_refused(tmp_path):
    stream = bytearray(lzma.compress(tar_bytes(good_members()), format=lzma.FORMAT_ALONE))
    stream[1:5] = struct.pack("<I", 3 * 2**30)  # LZMA_alone's header: properties byte, then the dictionary size
    shard = write(tmp_path / "legacy.tar", bytes(stream))
    with pytest.raises(ShardReadError, match="memory"):
        read_shard(shard)


def test_a_legacy_lzma_tar_of_honest_size_is_read(tmp_path):
    shard = write(tmp_path / "legacy.tar", lzma.compress(tar_bytes(good_members()), format=lzma.FORMAT_ALONE))
    assert read_shard(shard)["caption"].tolist() == ["a red square"]


@pytest.mark.parametrize("compress", ["gzip", "bz2", "xz"])
def test_a_compressed_bomb_of_zeros_is_bounded_by_the_shard_cap(tmp_path, compress):
    import bz2
    import gzip

    module = {"gzip": gzip, "bz2": bz2, "xz": lzma}[compress]
    raw = tar_bytes(member_bytes("zeros.jpg", bytes(16 * MiB)), good_members())
    shard = write(tmp_path / "bomb.tar", module.compress(raw))
    started = time.perf_counter()
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, max_member_bytes=MiB, limits=ShardLimits(shard_bytes=4 * MiB))
    assert time.perf_counter() - started < 5.0


# ---- 6. local image paths from the data: confined, regular files only, read up to the byte cap -------------

def _read_in_thread(*args, **kwargs):
    """read_image_bytes in a thread: a read that blocks (a FIFO) fails the test instead of hanging it."""
    import threading

    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(read_image_bytes(*args, **kwargs)), daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert outcome, "the read did not finish in 5 s"
    return outcome[0]


@pytest.fixture
def table_dir(tmp_path) -> Path:
    folder = tmp_path / "table"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "fine.png").write_bytes(png())
    (tmp_path / "outside.png").write_bytes(png())
    return folder


def test_a_path_leaving_the_tables_folder_is_a_row_status(table_dir):
    from clipeval.data.fetch import FetchOptions

    assert read_image_bytes("images/fine.png", table_dir).status == "ok"
    for ref in ("../outside.png", str(table_dir.parent / "outside.png"), "../../../../../../etc/hostname",
                "images/../../outside.png"):
        raw = _read_in_thread(ref, table_dir)
        assert raw.status == "outside_root" and "--image-root" in raw.error and raw.data is None, ref
    assert read_image_bytes("../outside.png", table_dir, fetch_options=FetchOptions(allow_any_path=True)).status == "ok"
    assert read_image_bytes("../outside.png", table_dir,
                            fetch_options=FetchOptions(image_root=table_dir.parent)).status == "ok"
    assert {"outside_root", "not_a_file"} <= set(STATUSES)


def test_a_symlink_leaving_the_root_is_refused_and_one_inside_is_read(table_dir):
    (table_dir / "images" / "escape.png").symlink_to(table_dir.parent / "outside.png")
    (table_dir / "images" / "alias.png").symlink_to(table_dir / "images" / "fine.png")
    assert read_image_bytes("images/escape.png", table_dir).status == "outside_root"
    assert read_image_bytes("images/alias.png", table_dir).status == "ok"


def test_devices_and_fifos_are_row_statuses_not_hangs_or_memory_errors(table_dir):
    import os

    from clipeval.data.fetch import FetchOptions

    os.mkfifo(table_dir / "images" / "fifo.png")
    assert _read_in_thread("images/fifo.png", table_dir).status == "not_a_file"
    anywhere = FetchOptions(allow_any_path=True)
    for device in ("/dev/zero", "/dev/urandom"):
        raw = _read_in_thread(device, table_dir, fetch_options=anywhere)
        assert raw.status == "not_a_file" and "character device" in raw.error, device
    assert _read_in_thread("/dev/zero", None).status == "not_a_file"  # a path the user gave, not the data


def test_a_local_file_is_read_only_up_to_the_byte_cap(table_dir):
    from clipeval.data.fetch import FetchOptions

    (table_dir / "images" / "big.png").write_bytes(png() + bytes(64 * 1024))
    raw = read_image_bytes("images/big.png", table_dir, fetch_options=FetchOptions(max_download_mb=1 / 32))
    assert raw.status == "too_large" and f"{2**15:,}" in raw.error


def test_images_stored_from_a_dataset_in_the_cache_stay_readable(tmp_path, table_dir):
    from clipeval.data.fetch import FetchOptions

    cache = tmp_path / "cache"
    (cache / "hf").mkdir(parents=True)
    (cache / "hf" / "stored.png").write_bytes(png())
    options = FetchOptions(image_cache_dir=cache)
    assert read_image_bytes(str(cache / "hf" / "stored.png"), table_dir, fetch_options=options).status == "ok"


def test_the_path_options_are_flags():
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "clipeval", "score", "--help"], capture_output=True, text=True,
                           check=True).stdout
    assert "--image-root" in shown and "--allow-any-path" in shown


# ---- 7-8. whole-response deadlines on image fetches and API replies, a byte cap on API replies -------------

HUGE_REPLY = b'{"choices": [{"message": {"content": "' + b"a" * (4 * MiB) + b'"}}]}'


class _DripHandler:
    """A stub server's answers by ``self.server.mode``: a body or headers one byte every 0.2 s, or a huge reply."""

    @staticmethod
    def handler():
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer()

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._answer()

            def _answer(self):
                self.server.requests += 1
                mode = self.server.mode
                try:
                    if mode == "huge":
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(HUGE_REPLY)))
                        self.end_headers()
                        self.wfile.write(HUGE_REPLY)
                        return
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    if mode == "drip_headers":
                        self.wfile.write(b"X-Drip: ")
                        for _ in range(50):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)
                        self.wfile.write(b"\r\n")
                    self.wfile.write(b"Content-Length: 100\r\n\r\n")
                    for _ in range(100):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:  # the client hung up, as it should
                    pass

        return Handler


@pytest.fixture
def drip_server():
    import sys
    from http.server import ThreadingHTTPServer

    sys.path.insert(0, str(Path(__file__).parent))
    from http_stub import serving

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass

    httpd = Server(("127.0.0.1", 0), _DripHandler.handler())
    httpd.mode, httpd.requests = "drip_body", 0
    with serving(httpd):
        yield httpd


@pytest.mark.parametrize(("mode", "requests"), [("drip_body", 1), ("drip_headers", 4)])
def test_the_fetch_timeout_bounds_the_whole_response(drip_server, mode, requests):
    from clipeval.data.fetch import FetchOptions, fetch_url

    drip_server.mode = mode
    options = FetchOptions(timeout=0.5, retries=3, backoff=0.01, allow_private_urls=True, image_cache_dir=None)
    started = time.monotonic()
    fetched = fetch_url(f"http://127.0.0.1:{drip_server.server_address[1]}/slow.jpg", options)
    assert time.monotonic() - started < 0.5 * requests + 1.5  # each attempt whole within the timeout (old: 20 s each)
    # a response begun but too slow to finish is not asked for again; one not yet begun is (a busy server)
    assert drip_server.requests == requests
    assert fetched.status == "timeout"
    assert ("whole response" in fetched.error) == (mode == "drip_body")


def _api(server, **options):
    from clipeval.labels.api import ApiCaptioner

    settings = dict(base=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m", key="k", timeout=1.0,
                    retries=2, backoff=0.01, cache_dir=None, progress=False)
    return ApiCaptioner(**{**settings, **options})


def test_the_api_timeout_bounds_the_whole_reply(drip_server, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    (tmp_path / "a.png").write_bytes(png())
    started = time.monotonic()
    with pytest.warns(UserWarning, match="api_timeout"):
        run = _api(drip_server).label(["a.png"], tmp_path)
    assert run.images["status"].tolist() == ["api_timeout"]
    assert time.monotonic() - started < 3.0 and drip_server.requests == 1


def test_an_api_reply_over_the_byte_cap_is_refused_unread(drip_server, tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    drip_server.mode = "huge"
    (tmp_path / "a.png").write_bytes(png())
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match="api_bad_response"):
            run = _api(drip_server, max_reply_kb=64).label(["a.png"], tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.images["status"].tolist() == ["api_bad_response"]
    assert "65,536" in run.images["error"][0]
    assert peak < 2 * MiB


# ---- 9. the report: nothing from the network, url( never survives sanitising -------------------------------

def test_report_pages_default_to_no_network_reach():
    from clipeval.report.sanitize import CSP

    directives = dict(part.strip().split(" ", 1) for part in CSP.split(";") if part.strip())
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'none'"
    allowed = " ".join(directives.values())
    assert "http" not in allowed and "*" not in allowed and "'unsafe-eval'" not in allowed


@pytest.mark.parametrize("style", ["cursor: url(https://evil.example/c.png), auto",
                                   "background-image: url('https://evil.example/b.png')",
                                   "list-style-image: URL(https://evil.example/l.png)",
                                   "cursor: u\\72 l(https://evil.example/e.png), auto",
                                   "background: image-set('https://evil.example/i.png' 1x)"])
def test_css_that_loads_a_resource_never_survives_sanitising(style):
    from clipeval.report.sanitize import sanitize_html

    cleaned = sanitize_html(f'<span style="{style}">x</span><p style="color: red">kept</p>')
    assert "evil.example" not in cleaned and "url(" not in cleaned.lower()
    assert 'style="color: red;"' in cleaned or 'style="color: red"' in cleaned


# ---- 10-11. the finder: cross-site requests refused; the query log is never a symlink ---------------------

@pytest.fixture(scope="module")
def finder(tmp_path_factory, tiny_specs, one_torch_thread):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from clipeval.finder.search import FinderIndex
    from finder_collection import build_small_index

    index_dir = build_small_index(tmp_path_factory.mktemp("finder"), [tiny_specs["hf-clip"]])
    return index_dir, FinderIndex.open(index_dir)


CROSS_SITE = [{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "cross-site"},
              {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://127.0.0.1:9999"}, {"Origin": "null"}]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_the_finder_refuses_cross_site_requests_that_run_a_model(finder, headers):
    from clipeval.finder.app import create_app

    index_dir, index = finder
    log = index_dir / "queries.jsonl"
    log.unlink(missing_ok=True)
    client = create_app(index, log_queries=True).test_client()
    item = index.items["id"].astype(str).iloc[0]
    upload = io.BytesIO(png())
    answers = [client.get("/api/search?q=a+red+square", headers=headers),
               client.get(f"/api/similar/{item}", headers=headers),
               client.post("/api/search-image", data={"image": (upload, "q.png")}, headers=headers,
                           content_type="multipart/form-data")]
    assert [answer.status_code for answer in answers] == [403, 403, 403]
    assert "cross-site" in answers[0].get_json()["error"]
    assert not log.exists()  # nothing ran, nothing was written
    assert client.get("/", headers=headers).status_code == 200  # a link to the page still opens it


def test_the_finder_answers_its_own_page_and_plain_clients(finder):
    from clipeval.finder.app import create_app

    _, index = finder
    client = create_app(index).test_client()
    for headers in ({}, {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, {"Sec-Fetch-Site": "none"}):
        assert client.get("/api/search?q=a+red+square", headers=headers).status_code == 200, headers


def test_the_query_log_refuses_a_symlink(finder, tmp_path):
    from clipeval.finder.app import create_app

    index_dir, index = finder
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched\n")
    log = index_dir / "queries.jsonl"
    log.unlink(missing_ok=True)
    log.symlink_to(target)
    try:
        with pytest.raises(ValueError, match="symlink"):
            create_app(index, log_queries=True)
        log.unlink()
        client = create_app(index, log_queries=True).test_client()
        log.symlink_to(target)  # swapped in while the server runs
        assert client.get("/api/search?q=a+red+square").status_code == 500
        assert target.read_text() == "untouched\n"
    finally:
        log.unlink(missing_ok=True)


# ---- 11. resuming a fine-tune never unpickles code --------------------------------------------------------

class _Planted:
    """A pickle that runs code when loaded: it creates the file ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_fine_tune_resume_state_cannot_run_code(tmp_path):
    import torch

    from clipeval.train.finetune import _restore

    marker = tmp_path / "ran"
    state = tmp_path / "state.pt"
    torch.save({"step": 3, "model": _Planted(marker)}, state)
    with pytest.raises(Exception, match=r"(?i)weights"):
        _restore(state, None, None, None, None, {})
    assert not marker.exists()


# ---- pairs tables (--pairs): bounded in bytes and rows like a shard, judged before they are read ---------------

def _six_pairs() -> pd.DataFrame:
    return pd.DataFrame({"image": [f"{row}.png" for row in range(6)],
                         "caption": [f"caption {row}" for row in range(6)]})


def _write_pairs_source(folder: Path, kind: str, table: pd.DataFrame) -> Path:
    """``table`` written as a source of ``kind`` (a table format's suffix, ``coco``, ``folder`` or ``hf``)."""
    import json

    folder.mkdir(exist_ok=True)
    if kind == "coco":
        path = folder / "captions_val.json"
        images = [{"id": row, "file_name": image} for row, image in enumerate(table["image"])]
        notes = [{"image_id": row, "id": row, "caption": caption} for row, caption in enumerate(table["caption"])]
        path.write_text(json.dumps({"images": images, "annotations": notes}))
    elif kind == "folder":
        path = folder / "images"
        path.mkdir()
        for image, caption in zip(table["image"], table["caption"]):
            (path / image).write_bytes(png())
            (path / image).with_suffix(".txt").write_text(caption)
    elif kind == "hf":
        import datasets

        path = folder / "saved"
        datasets.Dataset.from_pandas(table).save_to_disk(str(path))
    else:
        path = folder / f"pairs{kind}"
        {".csv": lambda: table.to_csv(path, index=False), ".tsv": lambda: table.to_csv(path, sep="\t", index=False),
         ".parquet": lambda: table.to_parquet(path), ".json": lambda: table.to_json(path, orient="records"),
         ".jsonl": lambda: table.to_json(path, orient="records", lines=True)}[kind]()
    return path


@pytest.mark.parametrize("kind", [".csv", ".tsv", ".jsonl", ".json", ".parquet", "coco", "folder", "hf"])
def test_pairs_source_rows_are_capped(tmp_path, kind):

    path = _write_pairs_source(tmp_path / "source", kind, _six_pairs())
    assert len(read_pairs(path, max_table_rows=6, cache_dir=tmp_path / "cache")) == 6
    with pytest.raises(PairsTableError, match="--max-table-rows") as raised:
        read_pairs(path, max_table_rows=5, cache_dir=tmp_path / "cache")
    assert "\n" not in str(raised.value) and "5" in str(raised.value)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_list_captions_count_against_the_row_cap(tmp_path, suffix):

    table = pd.DataFrame({"image": ["a.png", "b.png"], "caption": [[f"x {number}" for number in range(50)], ["y"]]})
    path = _write_pairs_source(tmp_path, suffix, table)
    assert len(read_pairs(path, max_table_rows=51)) == 51
    with pytest.raises(PairsTableError, match="--max-table-rows"):
        read_pairs(path, max_table_rows=50)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_long_table_is_read_no_further_than_the_row_cap(tmp_path, suffix):

    rows = 200_000
    path = _write_pairs_source(tmp_path, suffix, pd.DataFrame({"image": [f"{row}.png" for row in range(rows)],
                                                               "caption": [str(row) for row in range(rows)]}))
    read_pairs(_write_pairs_source(tmp_path / "warm", suffix, _six_pairs()))  # imports done before measuring
    raised, peak = _peak_while(lambda: read_pairs(path, max_table_rows=10))
    assert raised is not None and "--max-table-rows" in str(raised), raised
    assert peak < 2 * MiB  # read whole, its 400,000 strings would take over 20 MB


def _peak_while(call) -> tuple[Exception | None, int]:
    """The :class:`PairsTableError` ``call()`` raised (or None) and the peak bytes Python allocated meanwhile."""
    import tracemalloc


    tracemalloc.start()
    try:
        call()
        raised = None
    except PairsTableError as error:
        raised = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


@pytest.mark.parametrize("kind", [".csv", ".jsonl", ".json", "coco"])
def test_a_pairs_source_over_the_byte_cap_is_refused_unread(tmp_path, kind):

    many = pd.DataFrame({"image": [f"{row}.png" for row in range(80_000)], "caption": ["a caption"] * 80_000})
    path = _write_pairs_source(tmp_path, kind, many)
    assert 1.2 * MiB < path.stat().st_size < 8 * MiB
    read_pairs(path)  # honest under the default cap (and pandas' imports done before measuring)
    raised, peak = _peak_while(lambda: read_pairs(path, max_table_mb=1))
    assert raised is not None and "--max-table-mb" in str(raised), raised
    assert peak < MiB  # judged from its size: the file was never parsed (pandas: tens of MB)


def test_a_folders_caption_files_are_bounded_and_only_regular_files_are_read(tmp_path):
    import os
    import threading


    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.png").write_bytes(png())
    (folder / "a.txt").write_text("a red square")
    os.mkfifo(folder / "b.txt")  # read as a caption, it would block the run
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(read_pairs(folder)), daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert outcome, "reading the folder did not finish in 5 s"
    assert outcome[0]["caption"].tolist()[0] == "a red square" and pd.isna(outcome[0]["caption"][1])
    (folder / "a.txt").write_bytes(b"a" * (2 * MiB))
    with pytest.raises(PairsTableError, match=r"caption files.*--max-table-mb"):
        read_pairs(folder, max_table_mb=1)


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz", "zip"])
def test_a_compressed_pairs_table_is_bounded_by_what_it_decompresses_to(tmp_path, compression):
    import bz2
    import gzip
    import zipfile


    def compressed(name: str, text: bytes) -> Path:
        path = tmp_path / f"{name}.csv.{compression}"
        if compression == "zip":
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{name}.csv", text)
        else:
            path.write_bytes({"gz": gzip, "bz2": bz2, "xz": lzma}[compression].compress(text))
        return path

    honest = compressed("honest", b"image,caption\na.png,a red square\n")
    assert read_pairs(honest)["caption"].tolist() == ["a red square"]
    bomb = compressed("bomb", b"image,caption\n" + b"a.png," + b"a" * (64 * MiB) + b"\n")
    assert bomb.stat().st_size < 256 * 1024
    started = time.perf_counter()
    raised, peak = _peak_while(lambda: read_pairs(bomb, max_table_mb=1))
    assert raised is not None and "--max-table-mb" in str(raised), raised
    # xz's own dictionary (8 MiB at its default preset) counts here; the 64 MiB cell (twice that in pandas) never
    assert peak < 12 * MiB and time.perf_counter() - started < 5.0


def test_an_xz_pairs_table_declaring_a_huge_dictionary_is_refused(tmp_path):

    stream = bytearray(lzma.compress(b"image,caption\na.png,a red square\n", format=lzma.FORMAT_ALONE))
    honest = write(tmp_path / "honest.csv.xz", bytes(stream))
    assert read_pairs(honest)["caption"].tolist() == ["a red square"]
    stream[1:5] = struct.pack("<I", 3 * 2**30)  # LZMA_alone: a 3 GiB dictionary, allocated before a byte is read
    with pytest.raises(PairsTableError, match="memory"):
        read_pairs(write(tmp_path / "legacy.csv.xz", bytes(stream)))


def test_a_parquet_pairs_table_is_judged_from_its_footer(tmp_path):

    path = tmp_path / "big.parquet"
    pd.DataFrame({"image": [f"{row}.png" for row in range(6)], "caption": ["c"] * 6,
                  "blob": [bytes([row]) + bytes(MiB // 2) for row in range(6)]}).to_parquet(path, compression="gzip")
    assert path.stat().st_size < MiB // 4
    read_pairs(path)  # honest under the default caps (imports done before measuring)
    for options, flag in (({"max_table_mb": 2}, "--max-table-mb"), ({"max_table_rows": 5}, "--max-table-rows")):
        raised, peak = _peak_while(lambda options=options: read_pairs(path, **options))
        assert raised is not None and flag in str(raised), raised
        assert peak < MiB  # the 3 MiB of cells were never read


def test_the_table_caps_are_flags_of_every_command_that_reads_a_pairs_table(tmp_path):
    import subprocess
    import sys

    for command in ("score", "retrieve", "index", "finetune", "make-shards"):
        shown = subprocess.run([sys.executable, "-m", "clipeval", command, "--help"], capture_output=True, text=True,
                               check=True).stdout
        assert "--max-table-mb" in shown and "--max-table-rows" in shown, command
    _write_pairs_source(tmp_path, ".csv", _six_pairs())
    done = subprocess.run([sys.executable, "-m", "clipeval", "score", "--pairs", str(tmp_path / "pairs.csv"),
                           "--checkpoint", "hf:/no/such/checkpoint", "--out", str(tmp_path / "out"),
                           "--max-table-rows", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error:") and "--max-table-rows" in line and "pairs.csv" in line


def test_the_caps_are_not_what_a_source_is():
    from clipeval.data.options import SourceOptions

    assert SourceOptions(max_table_mb=1, max_table_rows=1).what_is_read() == SourceOptions().what_is_read()
    assert SourceOptions(caption_column="text").what_is_read() != SourceOptions().what_is_read()


def test_an_index_built_before_the_table_caps_still_resumes(tmp_path, tiny_specs):
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from clipeval.embed.options import EmbedOptions
    from clipeval.finder.index import build_index
    from clipeval.layout import IndexLayout
    from finder_collection import build_small_index

    spec = tiny_specs["hf-clip"]
    layout = IndexLayout(build_small_index(tmp_path, [spec]))
    for file in (layout.fingerprint, layout.manifest):  # as an index built before the caps records its source
        recorded = json.loads(file.read_text())
        source = recorded.get("source", recorded)
        for cap in ("max_table_mb", "max_table_rows"):
            source.pop(cap, None)
        file.write_text(json.dumps(recorded))
    again = build_index(str(tmp_path / "collection" / "pairs.csv"), [spec], layout.root,
                        embed=EmbedOptions(device="cpu", progress=False))
    assert again.skipped == [spec]


# ---- the whole family from the command line: small files, bounded cost --------------------------------------

@pytest.mark.slow
def test_score_over_a_folder_of_hostile_shards_is_bounded(tmp_path, tiny_specs):
    import json
    import os
    import subprocess
    import sys

    expected = hostile_folder(tmp_path / "shards")
    (tmp_path / "honest").mkdir()
    (tmp_path / "honest" / "good.tar").write_bytes((tmp_path / "shards" / "good.tar").read_bytes())
    on_disk = sum(path.stat().st_size for path in (tmp_path / "shards").iterdir() if path.is_file())
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    out = tmp_path / "out"

    def score(shards: Path, out: Path) -> tuple[float, float, str]:
        """Seconds, peak RSS (MB) and stderr of ``clipeval score`` in its own process."""
        measure = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
        command = [sys.executable, "-c", measure, sys.executable, "-m", "clipeval", "score", "--shards", str(shards),
                   "--checkpoint", tiny_specs["hf-clip"], "--out", str(out), "--device", "cpu", "--no-progress",
                   "--max-member-mb", "1", "--max-shard-mb", "64"]  # as the audit ran it
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        return time.monotonic() - started, int(done.stdout.strip().splitlines()[-1]) / 1024, done.stderr

    honest_seconds, honest_mb, _ = score(tmp_path / "honest", tmp_path / "honest-out")
    seconds, peak_mb, stderr = score(tmp_path / "shards", out)
    print(f"{on_disk / MiB:.1f} MB of hostile shards and a good one: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB; "
          f"the good shard alone: {honest_seconds:.1f} s, {honest_mb:.0f} MB")
    # bounded: the hostile shards cost little beyond the run itself (whose baseline is torch and the model)
    assert seconds < honest_seconds + 60 and peak_mb < honest_mb + 150, stderr[-3000:]
    shards = out / "shards"
    good = pd.read_parquet(shards / "good.parquet")
    assert good["status"].tolist() == ["ok", "ok"] and good["caption"].tolist() == ["a red square", "a blue square"]
    for name, outcome in expected.items():
        if outcome == "failed":
            failed = json.loads((shards / f"{name}.failed.json").read_text())
            assert failed["error"], name
        else:
            assert pd.read_parquet(shards / f"{name}.parquet")["status"].tolist() == outcome.split(","), name
    after = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")
             if not path.is_relative_to(out) and not path.is_relative_to(tmp_path / "honest-out")}
    assert after == before  # nothing written outside --out, the inputs untouched


@pytest.mark.parametrize("kind", ["table", "folder", "coco", "hf"])
def test_every_source_kind_confines_its_paths(tmp_path, kind):
    import json

    from clipeval.data.images import read_many_bytes
    from clipeval.data.sources import read_pairs

    source = tmp_path / "source"
    source.mkdir()
    (source / "fine.png").write_bytes(png())
    (tmp_path / "outside.png").write_bytes(png())
    refs = ["fine.png", "../outside.png", str(tmp_path / "outside.png")]
    if kind == "table":
        path = source / "pairs.csv"
        pd.DataFrame({"image": refs, "caption": ["a", "b", "c"]}).to_csv(path, index=False)
    elif kind == "folder":
        path = source
        (source / "link.png").symlink_to(tmp_path / "outside.png")
    elif kind == "coco":
        path = source / "captions_val.json"
        path.write_text(json.dumps({"images": [{"id": i, "file_name": ref} for i, ref in enumerate(refs)],
                                    "annotations": [{"image_id": i, "id": i, "caption": "c"} for i in range(3)]}))
    else:
        import datasets

        path = source / "saved"
        datasets.Dataset.from_dict({"image": refs, "caption": ["a", "b", "c"]}).save_to_disk(str(path))
        (path / "fine.png").write_bytes(png())
    table = read_pairs(path, cache_dir=tmp_path / "cache")
    statuses = [raw.status for raw in read_many_bytes(table["image"].tolist(), Path(table.attrs["base_dir"]))]
    expected = {"folder": ["ok", "outside_root"]}.get(kind, ["ok", "outside_root", "outside_root"])
    assert statuses == expected


def test_a_json_member_over_its_cap_is_never_parsed(tmp_path):
    import tracemalloc

    nested = b'{"captions": [], "x": [' + b",".join([b"[]"] * (MiB // 3)) + b"]}"  # about 1 MiB: 20 MB parsed
    shard = write(tmp_path / "json.tar", lzma.compress(tar_bytes(
        member_bytes("big.png", png()), member_bytes("big.json", nested), good_members())))
    read_shard(write(tmp_path / "warm.tar", tar_bytes(good_members())))  # imports done before measuring
    tracemalloc.start()
    try:
        table = read_shard(shard, limits=ShardLimits(json_bytes=512 * 1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB  # xz's own dictionary is 8 MiB; the json (20 MB once parsed) was never read
    refused = read_image_bytes(table["image"][0])
    assert refused.status == "member_too_large" and "--max-json-kb" in refused.error
    assert read_image_bytes(table["image"][1]).status == "ok"
