"""Small files of large cost (issue 36): tar pieces built byte by byte, and a folder of the audit's hostile shards.

Shared by ``tests/test_hostile_inputs.py`` and ``bench/bench_hostile.py`` (which measures a ``score --shards`` run
over :func:`hostile_folder`).
"""

from __future__ import annotations

import io
import lzma
import os
import struct
import tarfile
from pathlib import Path

import pandas as pd
from PIL import Image

MiB = 2**20


def png(color=(200, 30, 30)) -> bytes:
    """An 8 x 8 PNG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


def block(data: bytes) -> bytes:
    """``data`` padded to whole tar blocks."""
    return data + b"\0" * (-len(data) % 512)


def member_bytes(name: str, content: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One tar member (its ustar header and content) of any type, whatever tarfile would write."""
    info = tarfile.TarInfo(name)
    info.size, info.type = len(content), kind
    return info.tobuf(tarfile.USTAR_FORMAT) + block(content)


def good_members() -> bytes:
    """An honest sample: a red square and its caption."""
    return member_bytes("fine.png", png()) + member_bytes("fine.txt", b"a red square")


def tar_bytes(*members: bytes) -> bytes:
    """A whole tar of ``members``."""
    return b"".join(members) + b"\0" * 1024


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def hostile_folder(folder: Path) -> dict[str, str]:
    """One good tar and the audit's hostile shards, each a few KB to a few MB on disk, written into ``folder`` (new).

    Returns:
        What each shard (by name) should give: ``failed`` (a failed marker), or its rows' statuses joined by commas.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    write(folder / "good.tar", tar_bytes(good_members(), member_bytes("blue.png", png((20, 30, 200))),
                                         member_bytes("blue.txt", b"a blue square")))
    write(folder / "pax.tar", tar_bytes(member_bytes("././@PaxHeader", b"1" * 200_000, tarfile.XHDTYPE),
                                        good_members()))
    write(folder / "longname.tar", lzma.compress(tar_bytes(
        member_bytes("././@LongLink", b"a" * (32 * MiB) + b".jpg", tarfile.GNUTYPE_LONGNAME), good_members())))
    write(folder / "many.tar", lzma.compress(tar_bytes(
        *[member_bytes(f"{number:03d}.jpg", bytes(MiB - 1024)) for number in range(150)], good_members())))
    captions = b'{"captions": [' + b",".join([b'"x"'] * 200_000) + b"]}"
    write(folder / "captions.tar", lzma.compress(tar_bytes(member_bytes("many.png", png()),
                                                           member_bytes("many.json", captions))))
    legacy = bytearray(lzma.compress(tar_bytes(good_members()), format=lzma.FORMAT_ALONE))
    legacy[1:5] = struct.pack("<I", 3 * 2**30)
    write(folder / "legacy.tar", bytes(legacy))
    for name, size in (("cells", 100 * MiB), ("cell", 8 * MiB)):
        with pq.ParquetWriter(folder / f"{name}.parquet", pa.schema([("image", pa.binary()), ("caption", pa.string())]),
                              compression="zstd") as writer:
            writer.write_table(pa.table({"image": [bytes(size)], "caption": ["zeros"]}))
            writer.write_table(pa.table({"image": [png()], "caption": ["a red square"]}))
    write(folder / "rows.csv", b"image,caption\n" + b"a.png,c\n" * 1_000_001)  # one row over the default row cap
    os.mkfifo(folder / "fifo.png")
    (folder / "escape.png").symlink_to("/etc/hostname")
    pd.DataFrame({"image": ["/dev/zero", "fifo.png", "../../../../../../etc/hostname", "escape.png"],
                  "caption": ["zeros", "a pipe", "a file elsewhere", "a link out"]}).to_csv(folder / "paths.csv",
                                                                                            index=False)
    return {"good": "ok,ok", "pax": "failed", "longname": "failed", "many": "failed", "legacy": "failed",
            "rows": "failed", "captions": "too_many_captions", "cells": "failed", "cell": "member_too_large,ok",
            "paths": "outside_root,not_a_file,outside_root,outside_root"}
