"""Hostile web data: image formats outside the allow-list, decompression bombs, shard members over
the byte cap, and tar member names that would make unsafe or duplicate uids.

Every fixture is built in ``tmp_path`` and stays tiny on disk: an over-cap member is a sparse
region of a hand-written tar, or zeros in a gzip tar.
"""

import io
import json
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import EpsImagePlugin, Image

from clipeval.data.images import STATUSES, decode_image, read_image, read_image_bytes
from clipeval.data.shards import read_shard
from clipeval.data.sources import IMAGE_EXTENSIONS
from clipeval.data.summary import describe_images, image_info

MiB = 2**20
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


def _png(size=(8, 8), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that is only its header: IHDR declaring ``width`` x ``height``, then IEND (no pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _saved(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).convert(mode).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def no_ghostscript(monkeypatch):
    """Fails the test if Pillow ever tries to run Ghostscript (whether or not it is installed)."""
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args) or 1 / 0)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)  # as on a machine where gs is installed
    yield calls
    assert not calls, "Ghostscript was invoked"


# ---- image formats: one allow-list ----------------------------------------------------------------

REFUSED = [("EPS", EPS), ("PCX", None), ("SGI", None), ("XBM", None), ("DDS", None)]


@pytest.mark.parametrize(("fmt", "data"), REFUSED, ids=[fmt for fmt, _ in REFUSED])
def test_a_format_outside_the_allow_list_is_refused_by_read_and_decode(tmp_path, no_ghostscript, fmt, data):
    data = data or _saved(fmt, "1" if fmt == "XBM" else "RGB")
    path = tmp_path / "photo.jpg"  # the extension says JPEG; the content decides
    path.write_bytes(data)
    for loaded in (decode_image(data), read_image(str(path)), read_image("photo.jpg", tmp_path)):
        assert loaded.image is None
        assert loaded.status == "format_refused", loaded
        assert f"format {fmt} is not accepted" in loaded.error
    assert "format_refused" in STATUSES


def test_eps_is_refused_by_the_data_summary(tmp_path, no_ghostscript):
    (tmp_path / "photo.jpg").write_bytes(EPS)
    info = image_info("photo.jpg", tmp_path)
    assert info["readable"] is False
    assert info["status"] == "format_refused" and "EPS" in info["error"]
    assert info.get("format") in (None, "")  # never reported as a readable EPS


def test_eps_is_refused_by_the_api_labeller_payload(no_ghostscript):
    from clipeval.labels.api import _image_payload, _Outcome

    outcome = _image_payload(EPS)
    assert isinstance(outcome, _Outcome)
    assert outcome.status == "format_refused" and "EPS" in outcome.error
    mime, sent = _image_payload(_png())  # an accepted format is still sent as is
    assert mime == "image/png" and sent == _png()


def test_the_allow_list_covers_every_claimed_extension_and_no_external_program_format():
    from clipeval.data.images import IMAGE_FORMATS, open_image

    assert not {"EPS", "PS", "PDF", "MPEG", "WMF", "EMF", "FITS", "GRIB", "BUFR", "HDF5"} & set(IMAGE_FORMATS)
    saved_as = Image.registered_extensions()
    for extension in sorted(IMAGE_EXTENSIONS):
        mode = {".pbm": "1", ".pgm": "L"}.get(extension, "RGB")
        data = _saved(saved_as[extension], mode)
        loaded = decode_image(data)
        assert loaded.status == "ok", (extension, loaded)
        with open_image(io.BytesIO(data)) as opened:
            assert opened.format in IMAGE_FORMATS or opened.format == "MPO"


# ---- decompression bombs -----------------------------------------------------------------------------

def test_a_header_only_bomb_is_a_row_status_in_the_data_summary(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))  # 10^10 pixels, 50 bytes on disk
    (tmp_path / "big.png").write_bytes(_png_header(10_000, 10_000))     # over the cap, under Pillow's error
    (tmp_path / "fine.png").write_bytes(_png())
    pairs = pd.DataFrame({"image": ["bomb.png", "big.png", "fine.png", "nowhere.png"], "caption": ["a", "b", "c", "d"]})
    pairs.attrs["base_dir"] = str(tmp_path)
    info = describe_images(pairs).set_index("image")
    assert {"readable", "status", "error", "width", "height", "mode", "format"} <= set(info.columns)
    assert info.loc["bomb.png", "readable"] == False  # noqa: E712 - a numpy bool
    assert info.loc["bomb.png", "status"] == "too_many_pixels"
    assert info.loc["big.png", "status"] == "too_many_pixels" and info.loc["big.png", "width"] == 10_000
    assert info.loc["fine.png", "status"] == "ok" and info.loc["fine.png", "readable"] == True  # noqa: E712
    assert info.loc["nowhere.png", "status"] == "missing"


def test_a_bomb_does_not_stop_notebook_01(tmp_path):
    """Notebook 01's cells, in order, on a pairs table holding a bomb (without papermill)."""
    import matplotlib

    matplotlib.use("Agg")
    from clipeval.data.options import SourceOptions
    from clipeval.jobs import steps
    from clipeval.plots.data import plot_image_sizes, plot_sample_grid

    (tmp_path / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (tmp_path / "eps.jpg").write_bytes(EPS)
    (tmp_path / "fine.png").write_bytes(_png())
    (tmp_path / "pairs.csv").write_text("image,caption\nbomb.png,a bomb\neps.jpg,postscript\nfine.png,a red square\n")
    explored = steps.explore(str(tmp_path / "pairs.csv"), SourceOptions("image", "caption"))
    assert explored.images.set_index("image")["status"].to_dict() == {
        "bomb.png": "too_many_pixels", "eps.jpg": "format_refused", "fine.png": "ok"}
    explored.images.groupby(["mode", "format"]).size()
    plot_image_sizes(explored.images, tmp_path / "sizes.png")
    plot_sample_grid(explored.pairs, "image", "caption", n=3, path=tmp_path / "grid.png")
    assert (tmp_path / "sizes.png").exists() and (tmp_path / "grid.png").exists()


# ---- shard members over the byte cap ------------------------------------------------------------------

def _member(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def _write_tar(path: Path, members, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, content in members:
            info, data = _member(name, content)
            archive.addfile(info, io.BytesIO(data))
    return path


def _sparse_tar(path: Path, big_name: str, big_size: int, after=()) -> Path:
    """A tar written by hand whose member ``big_name`` is ``big_size`` bytes of holes (tiny on disk)."""
    info = tarfile.TarInfo(big_name)
    info.size = big_size
    with open(path, "wb") as handle:
        handle.write(info.tobuf(tarfile.GNU_FORMAT))
        handle.seek(512 + -(-big_size // 512) * 512)  # skip the member's data: a hole
        for name, content in after:
            member, data = _member(name, content)
            handle.write(member.tobuf(tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512))
        handle.write(b"\0" * 1024)
    return path


def test_a_member_over_the_cap_is_a_row_status_read_from_the_header(tmp_path):
    shard = _sparse_tar(tmp_path / "s.tar", "big.jpg", 8 * MiB,
                        after=[("big.txt", b"a huge image"), ("fine.png", _png()), ("fine.txt", b"a red square")])
    assert shard.stat().st_blocks * 512 < MiB  # the fixture itself is small on disk
    table = read_shard(shard, max_member_bytes=MiB)
    assert table["uid"].tolist() == ["s/big", "s/fine"]
    assert table["caption"].tolist() == ["a huge image", "a red square"]
    big = read_image_bytes(table["image"][0])
    assert big.status == "member_too_large" and "big.jpg" in big.error and f"{MiB:,}" in big.error
    assert read_image_bytes(table["image"][1]).status == "ok"
    assert "member_too_large" in STATUSES


def test_the_default_member_cap_is_a_module_constant(tmp_path, monkeypatch):
    from clipeval.data import shards

    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", MiB)
    shard = _sparse_tar(tmp_path / "s.tar", "big.jpg", 8 * MiB, after=[("big.txt", b"x")])
    assert read_image_bytes(read_shard(shard)["image"][0]).status == "member_too_large"


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_a_compressed_tar_named_tar_is_read_under_the_cap(tmp_path, compression):
    shard = _write_tar(tmp_path / "s.tar", [("zeros.jpg", bytes(32 * MiB)), ("zeros.txt", b"zeros"),
                                            ("fine.png", _png()), ("fine.txt", b"a red square")], f"w:{compression}")
    assert shard.stat().st_size < MiB
    tracemalloc.start()
    try:
        table = read_shard(shard, max_member_bytes=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB  # the 32 MiB member was never held in memory (xz's own dictionary is 8 MiB)
    assert table["uid"].tolist() == ["s/zeros", "s/fine"]
    assert read_image_bytes(table["image"][0]).status == "member_too_large"
    assert read_image_bytes(table["image"][1]).status == "ok"


def test_an_xz_tar_asking_for_too_much_memory_is_refused(tmp_path):
    from clipeval.data.options import ShardLimits
    from clipeval.data.shards import ShardReadError

    shard = _write_tar(tmp_path / "s.tar", [("fine.png", _png()), ("fine.txt", b"a red square")], "w:xz")
    assert len(read_shard(shard)) == 1
    with pytest.raises(ShardReadError, match="--max-xz-memory-mb"):  # below the 8 MiB dictionary of xz's preset
        read_shard(shard, limits=ShardLimits(xz_memory=MiB))


def test_benchmark_tars_refuse_an_over_cap_member_as_a_read_error(tmp_path):
    from clipeval.data.shards import ShardReadError, iter_tar_samples

    shard = _sparse_tar(tmp_path / "0.tar", "big.jpg", 8 * MiB, after=[("big.txt", b"x")])
    with pytest.raises(ShardReadError, match=r"big\.jpg"):
        list(iter_tar_samples(shard, max_member_bytes=MiB))


def test_the_cap_is_a_shard_option_and_reaches_a_scored_row(tmp_path, tiny_specs):
    from clipeval.embed.options import EmbedOptions
    from clipeval.jobs.steps import score_shards
    from clipeval.pipeline.options import ShardOptions

    shard = _sparse_tar(tmp_path / "s.tar", "big.jpg", 8 * MiB,
                        after=[("big.txt", b"a huge image"), ("fine.png", _png()), ("fine.txt", b"a red square"),
                               ("fine.txt", b"the same key again")])
    (tmp_path / "x.png").write_bytes(_png())
    pd.DataFrame({"uid": ["k", "k"], "image": ["x.png", "x.png"], "caption": ["one", "two"]}).to_parquet(
        tmp_path / "p.parquet")
    spec = tiny_specs["hf-clip"]
    score_shards(tmp_path / "run", [str(shard), str(tmp_path / "p.parquet")], [spec], ShardOptions(max_member_mb=1.0),
                 EmbedOptions(device="cpu", progress=False))
    scored = pd.read_parquet(tmp_path / "run" / "shards" / "s.parquet")
    assert scored["status"].tolist() == ["member_too_large", "ok", "duplicate_uid"]
    assert scored["uid"].tolist() == ["s/big", "s/fine", "s/fine#2"]
    assert np.isnan(scored[f"cosine[{spec}]"][0]) and not np.isnan(scored[f"cosine[{spec}]"][1])
    table = pd.read_parquet(tmp_path / "run" / "shards" / "p.parquet")
    assert table["status"].tolist() == ["ok", "duplicate_uid"] and table["uid"].tolist() == ["k", "k#1"]
    assert table["image"].tolist() == ["x.png", "x.png"]  # the duplicate row keeps its input columns


# ---- uids: safe names, duplicates reported -------------------------------------------------------------

def _status(cell, base_dir: Path | None = None) -> tuple[str, str]:
    raw = read_image_bytes(cell, base_dir)
    return raw.status, raw.error


def test_ungrouped_tar_members_give_distinct_uids_and_a_duplicate_status(tmp_path):
    shard = _write_tar(tmp_path / "s.tar", [("a.jpg", _png()), ("b.jpg", _png(color=(1, 2, 3))),
                                            ("a.txt", b"caption a"), ("b.txt", b"caption b")])
    table = read_shard(shard)
    assert len(table) == 4  # no row dropped
    assert table["uid"].is_unique
    assert table["uid"][:2].tolist() == ["s/a", "s/b"]
    assert [_status(cell)[0] for cell in table["image"]] == ["ok", "ok", "duplicate_uid", "duplicate_uid"]
    assert "row 0" in _status(table["image"][2])[1] and "s/a" in _status(table["image"][2])[1]
    assert "row 1" in _status(table["image"][3])[1]
    assert "duplicate_uid" in STATUSES


def _assert_safe(uid: str, shard: str = "s"):
    assert uid.startswith(f"{shard}/")
    parts = uid.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in uid and all(ord(char) >= 32 and char != "\x7f" for char in uid)


def test_member_names_with_path_parts_become_safe_distinct_uids(tmp_path):
    names = ["../../escape", "/tmp/absolute", "back\\slash", "ctl\x01char", "./c", "c", "dir/./d", "dir//e"]
    members = []
    for name in names:
        members += [(f"{name}.jpg", _png()), (f"{name}.txt", f"caption of {name}".encode())]
    table = read_shard(_write_tar(tmp_path / "s.tar", members))
    assert len(table) == len(names)
    assert table["uid"].is_unique
    for uid in table["uid"]:
        _assert_safe(uid)
    assert "escape" in table["uid"][0] and "absolute" in table["uid"][1]
    statuses = [_status(cell)[0] for cell in table["image"]]
    # "./c" and "c" name the same file: the second is reported, not silently merged or overwritten
    assert statuses == ["ok", "ok", "ok", "ok", "ok", "duplicate_uid", "ok", "ok"]
    assert "row 4" in _status(table["image"][5])[1]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_uid_column_with_duplicates_and_unsafe_values(tmp_path, suffix):
    (tmp_path / "x.png").write_bytes(_png())
    table = pd.DataFrame({"uid": ["a", "../../etc/passwd", "a", "/abs/olute", "new\nline"],
                          "image": ["x.png"] * 5, "caption": ["one", "two", "three", "four", "five"]})
    path = tmp_path / f"s{suffix}"
    table.to_parquet(path) if suffix == ".parquet" else table.to_csv(path, index=False)
    read = read_shard(path)
    assert len(read) == 5 and read["uid"].is_unique
    for uid in read["uid"]:
        assert ".." not in uid.split("/") and not uid.startswith("/") and "\n" not in uid
    assert read["uid"][0] == "a"
    statuses = [_status(cell, tmp_path) for cell in read["image"]]
    assert [status for status, _ in statuses] == ["ok", "ok", "duplicate_uid", "ok", "ok"]
    assert "row 0" in statuses[2][1]
    assert read["image"].map(str).tolist() == ["x.png"] * 5  # the row's reference is kept
    assert json.loads(json.dumps(read["uid"].tolist()))  # plain strings
