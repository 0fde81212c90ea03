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
from PIL import Image

from clipeval.data.images import STATUSES, read_image_bytes
from clipeval.data.options import ShardLimits
from clipeval.data.shards import ShardReadError, read_shard

MiB = 2**20


def _png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


def _block(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def _member_bytes(name: str, content: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(content), kind
    return info.tobuf(tarfile.USTAR_FORMAT) + _block(content)


def _good_members() -> bytes:
    return _member_bytes("fine.png", _png()) + _member_bytes("fine.txt", b"a red square")


def _tar_bytes(*members: bytes) -> bytes:
    return b"".join(members) + b"\0" * 1024


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- 1. pax headers: CPython's quadratic parsing (CVE-2024-6232) never runs on a hostile one -----------

def test_a_pax_header_of_digits_fails_the_shard_at_once(tmp_path):
    payload = b"1" * 40_000  # 1.3 s at 32,000 digits in CPython 3.11.7's parser, four times as long per doubling
    shard = _write(tmp_path / "pax.tar", _tar_bytes(_member_bytes("././@PaxHeader", payload, tarfile.XHDTYPE),
                                                    _good_members()))
    started = time.perf_counter()
    with pytest.raises(ShardReadError, match="pax header"):
        read_shard(shard)
    assert time.perf_counter() - started < 0.5


def test_a_pax_header_over_the_header_cap_is_refused_before_it_is_read(tmp_path):
    record = b"path=" + b"a" * (2 * MiB)
    record = str(len(record) + 9).encode() + b" " + record + b"\n"
    shard = _write(tmp_path / "pax.tar", _tar_bytes(_member_bytes("././@PaxHeader", record, tarfile.XHDTYPE),
                                                    _good_members()))
    with pytest.raises(ShardReadError, match="header cap"):
        read_shard(shard)


def test_honest_pax_headers_still_read(tmp_path):
    shard = tmp_path / "honest.tar"
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in (("é" * 150 + ".png", _png()), ("é" * 150 + ".txt", "ünïcode".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    table = read_shard(shard)
    assert table["caption"].tolist() == ["ünïcode"]
    assert read_image_bytes(table["image"][0]).status == "ok"


# ---- 2. a GNU long name is capped before it is read ------------------------------------------------------------

def test_a_gnu_long_name_over_the_header_cap_fails_the_shard_unread(tmp_path):
    raw = _tar_bytes(_member_bytes("././@LongLink", b"a" * (2 * MiB) + b".jpg", tarfile.GNUTYPE_LONGNAME),
                     _member_bytes("short.jpg", _png()), _good_members())
    shard = _write(tmp_path / "long.tar", lzma.compress(raw))
    assert shard.stat().st_size < 64 * 1024
    with pytest.raises(ShardReadError, match="header cap"):
        read_shard(shard)


# ---- 3. bytes per shard, rows per shard, captions per sample ----------------------------------------------------

def test_many_members_under_the_member_cap_trip_the_shard_cap(tmp_path):
    members = [_member_bytes(f"{number:03d}.jpg", bytes(MiB - 1024)) for number in range(12)]
    shard = _write(tmp_path / "many.tar", lzma.compress(_tar_bytes(*members, _good_members())))
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, max_member_bytes=MiB, limits=ShardLimits(shard_bytes=8 * MiB))


def test_rows_per_shard_are_capped(tmp_path):
    members = [_member_bytes(f"{number:03d}.txt", b"caption") for number in range(5)]
    shard = _write(tmp_path / "rows.tar", _tar_bytes(*members))
    assert len(read_shard(shard, limits=ShardLimits(rows=5))) == 5
    with pytest.raises(ShardReadError, match="--max-shard-rows"):
        read_shard(shard, limits=ShardLimits(rows=4))


def test_a_sample_listing_too_many_captions_is_one_row_with_a_status(tmp_path):
    captions = b'{"captions": [' + b",".join([b'"x"'] * 5_000) + b"]}"
    shard = _write(tmp_path / "captions.tar", _tar_bytes(_member_bytes("many.png", _png()),
                                                         _member_bytes("many.json", captions), _good_members()))
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
        writer.write_table(pa.table({"image": [_png()], "caption": ["a red square"]}))
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
    pd.DataFrame({"image": [_png(), _png()], "caption": [["x"] * 50, ["a", "b"]]}).to_parquet(shard)
    table = read_shard(shard, limits=ShardLimits(captions=10))
    assert pd.isna(table["caption"][0]) and table["caption"].tolist()[1:] == ["a", "b"]
    assert read_image_bytes(table["image"][0]).status == "too_many_captions"


# ---- 4. every compressed container under a memory limit, whatever its magic bytes ---------------------------

def test_a_legacy_lzma_tar_declaring_a_huge_dictionary_is_refused(tmp_path):
    stream = bytearray(lzma.compress(_tar_bytes(_good_members()), format=lzma.FORMAT_ALONE))
    stream[1:5] = struct.pack("<I", 3 * 2**30)  # LZMA_alone's header: properties byte, then the dictionary size
    shard = _write(tmp_path / "legacy.tar", bytes(stream))
    with pytest.raises(ShardReadError, match="memory"):
        read_shard(shard)


def test_a_legacy_lzma_tar_of_honest_size_is_read(tmp_path):
    shard = _write(tmp_path / "legacy.tar", lzma.compress(_tar_bytes(_good_members()), format=lzma.FORMAT_ALONE))
    assert read_shard(shard)["caption"].tolist() == ["a red square"]


@pytest.mark.parametrize("compress", ["gzip", "bz2", "xz"])
def test_a_compressed_bomb_of_zeros_is_bounded_by_the_shard_cap(tmp_path, compress):
    import bz2
    import gzip

    module = {"gzip": gzip, "bz2": bz2, "xz": lzma}[compress]
    raw = _tar_bytes(_member_bytes("zeros.jpg", bytes(16 * MiB)), _good_members())
    shard = _write(tmp_path / "bomb.tar", module.compress(raw))
    started = time.perf_counter()
    with pytest.raises(ShardReadError, match="--max-shard-mb"):
        read_shard(shard, max_member_bytes=MiB, limits=ShardLimits(shard_bytes=4 * MiB))
    assert time.perf_counter() - started < 2.0
