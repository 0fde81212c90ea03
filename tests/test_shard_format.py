"""Shard layout: each image stored once with its captions, one row per caption read back, and the
columns (``source_row``, ``source_image``, ``uid``) that join every row back to the pairs table."""

import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.curate.engine import curate_run
from clipeval.curate.rules import parse_rule
from clipeval.data.shards import IMAGE_EXTENSIONS, read_shard, write_filtered_shard, write_shards
from clipeval.data.sources import read_pairs
from clipeval.embed.options import EmbedOptions
from clipeval.jobs.steps import score, score_shards
from clipeval.layout import CurationLayout, RunLayout, score_column

CPU = EmbedOptions(device="cpu", progress=False, embedding_cache=False)
# three images, their captions interleaved (not consecutive), one image named two ways, a caption with a line break
IMAGES = ["a.png", "b.png", "a.png", "c.png", "b.png", "a.png", "./c.png"]
CAPTIONS = ["a red square", "a green square", "red on black", "a blue square", "green, again",
            "a square of red\non two lines", "blue once more"]


@pytest.fixture
def pairs_csv(tmp_path) -> Path:
    """A pairs table of 7 captions of 3 images (32-px PNGs of one colour each) beside its images."""
    for name, colour in (("a.png", (200, 0, 0)), ("b.png", (0, 200, 0)), ("c.png", (0, 0, 200))):
        Image.new("RGB", (32, 32), colour).save(tmp_path / name)
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"image": IMAGES, "caption": CAPTIONS, "match": [True, False, True, True, False, True, False]}
                 ).to_csv(path, index=False)
    return path


def _read_all(paths: list[Path]) -> pd.DataFrame:
    return pd.concat([read_shard(path).assign(shard=path.name) for path in paths], ignore_index=True)


def _tar_images(paths: list[Path]) -> list[bytes]:
    images = []
    for path in paths:
        with tarfile.open(path) as archive:
            images += [archive.extractfile(member).read() for member in archive
                       if member.name.rpartition(".")[2] in IMAGE_EXTENSIONS]
    return images


def _assert_joins_back(read: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Rows out = rows in, and ``source_row`` / ``source_image`` give back each row's input exactly."""
    assert len(read) == len(pairs) and sorted(read["source_row"]) == list(range(len(pairs)))
    joined = read.merge(pairs.rename_axis("source_row").reset_index(), on="source_row", suffixes=("", "_in"))
    assert joined["caption"].tolist() == joined["caption_in"].tolist()
    assert joined["match"].astype(bool).tolist() == joined["match_in"].astype(bool).tolist()
    assert joined["source_image"].tolist() == joined["image_in"].tolist()  # the reference as the table gives it
    base = Path(pairs.attrs["base_dir"])
    for cell, ref in zip(joined["image"], joined["image_in"]):
        expected = (base / ref).resolve()
        assert cell == expected.read_bytes() if isinstance(cell, bytes) else Path(cell) == expected
    assert read["uid"].is_unique


@pytest.mark.parametrize("shard_format", ["tar", "parquet", "csv"])
def test_rows_out_equal_rows_in_and_join_back(pairs_csv, tmp_path, shard_format):
    pairs = read_pairs(pairs_csv)
    paths = write_shards(pairs, tmp_path / "shards", 2, shard_format)
    read = _read_all(paths)
    _assert_joins_back(read, pairs)
    # an image's captions stay in one shard, in table order: a: rows 0, 2, 5; b: 1, 4; c: 3, 6
    by_shard = read.groupby("shard")["source_row"].apply(list).tolist()
    assert by_shard == [[0, 2, 5, 1, 4], [3, 6]]


def test_a_tar_stores_each_image_once_with_its_captions(pairs_csv, tmp_path):
    pairs = read_pairs(pairs_csv)
    paths = write_shards(pairs, tmp_path / "shards", 2, "tar")
    files = {name: (tmp_path / name).read_bytes() for name in ("a.png", "b.png", "c.png")}
    images = _tar_images(paths)
    assert sorted(images) == sorted(files.values())  # 3 image members for 7 captions, byte for byte
    with tarfile.open(paths[0]) as archive:
        names = archive.getnames()
        fields = json.loads(archive.extractfile("000000000.json").read())
        txt = archive.extractfile("000000000.txt").read().decode()
    assert names == [f"00000000{n}.{ext}" for n in (0, 1) for ext in ("png", "txt", "json")]
    assert fields["captions"] == [CAPTIONS[0], CAPTIONS[2], CAPTIONS[5]] and fields["source_row"] == [0, 2, 5]
    assert txt.split("\n") == [CAPTIONS[0], CAPTIONS[2], "a square of red\\non two lines"]  # one caption a line
    read = read_shard(paths[0])
    assert read["uid"].tolist() == ["shard-00000/000000000.0", "shard-00000/000000000.1", "shard-00000/000000000.2",
                                    "shard-00000/000000001.0", "shard-00000/000000001.1"]
    assert read["__caption__"].tolist() == [0, 1, 2, 0, 1]
    assert read["caption"][2] == CAPTIONS[5]  # the json's captions, not the escaped txt line
    assert read["image"][0] is read["image"][2]  # read once, shared by the image's rows


def test_a_parquet_stores_each_image_once(pairs_csv, tmp_path):
    paths = write_shards(read_pairs(pairs_csv), tmp_path / "shards", 1, "parquet")
    raw = pd.read_parquet(paths[0])
    assert len(raw) == 3 and sorted(raw["image"]) == sorted((tmp_path / n).read_bytes() for n in ("a.png", "b.png",
                                                                                                  "c.png"))
    assert list(raw["caption"][0]) == [CAPTIONS[0], CAPTIONS[2], CAPTIONS[5]]
    assert len(read_shard(paths[0])) == 7


def test_the_source_uid_names_the_rows(pairs_csv, tmp_path):
    pairs = read_pairs(pairs_csv)
    pairs["uid"] = [f"pair-{n}" for n in range(len(pairs))]
    for shard_format in ("tar", "parquet"):
        read = _read_all(write_shards(pairs, tmp_path / shard_format, 2, shard_format))
        assert dict(zip(read["source_row"], read["uid"])) == {n: f"pair-{n}" for n in range(len(pairs))}


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grouped_samples_written_elsewhere(tmp_path):
    """A per-image uid and per-image fields in a grouped tar; a parquet with a list of captions per image."""
    fields = {"uid": "img-7", "url": "https://example.org/7.png", "captions": ["one", "two"], "lang": ["en", "fr"]}
    read = read_shard(_tar(tmp_path / "g.tar", {"7.png": _png(), "7.json": json.dumps(fields).encode()}))
    assert read["uid"].tolist() == ["img-7.0", "img-7.1"] and read["caption"].tolist() == ["one", "two"]
    assert read["lang"].tolist() == ["en", "fr"] and read["url"].tolist() == [fields["url"]] * 2
    empty = read_shard(_tar(tmp_path / "e.tar", {"8.png": _png(), "8.json": b'{"captions": []}'}))
    assert len(empty) == 1 and empty["caption"].isna().all()  # no caption: the image keeps a row
    pd.DataFrame({"image": [_png(), _png()], "sentences": [["x", "y", "z"], ["w"]], "id": [1, 2]}).to_parquet(
        tmp_path / "hf.parquet")
    read = read_shard(tmp_path / "hf.parquet", caption_column="sentences")
    assert read["sentences"].tolist() == ["x", "y", "z", "w"] and read["id"].tolist() == [1, 1, 1, 2]
    assert read["uid"].tolist() == ["hf/0", "hf/1", "hf/2", "hf/3"]


def test_shards_of_one_caption_per_sample_still_read(tmp_path):
    """An earlier version's (and img2dataset's) layout: a txt caption per sample, json fields without a list."""
    members = {"000000000.png": _png(), "000000000.txt": b"a caption\nwith a line break",
               "000000000.json": b'{"match": true, "key": "000000000"}',
               "000000001.png": _png(), "000000001.txt": b"another", "000000001.json": b'{"match": false}'}
    read = read_shard(_tar(tmp_path / "old.tar", members))
    assert read["uid"].tolist() == ["old/000000000", "old/000000001"]
    assert read["caption"].tolist() == ["a caption\nwith a line break", "another"]
    assert read["match"].tolist() == [True, False] and "__caption__" not in read


@pytest.mark.parametrize("shard_format", ["tar", "parquet"])
def test_filtering_keeps_the_chosen_captions_and_the_image_once(pairs_csv, tmp_path, shard_format):
    pairs = read_pairs(pairs_csv)
    path = write_shards(pairs, tmp_path / "shards", 1, shard_format)[0]
    read = read_shard(path)
    keep = [int(row) for row in np.flatnonzero(read["source_row"].isin([2, 3, 6]))]  # a: 1 of 3; b: none; c: both
    filtered = write_filtered_shard(path, keep, tmp_path / f"kept.{shard_format}")
    again = read_shard(filtered)
    assert again["source_row"].tolist() == [2, 3, 6]
    assert again["caption"].tolist() == [CAPTIONS[2], CAPTIONS[3], CAPTIONS[6]]
    images = _tar_images([filtered]) if shard_format == "tar" else pd.read_parquet(filtered)["image"].tolist()
    assert images == [(tmp_path / "a.png").read_bytes(), (tmp_path / "c.png").read_bytes()]


def test_refuses_columns_it_writes_and_more_shards_than_images(pairs_csv, tmp_path):
    pairs = read_pairs(pairs_csv)
    with pytest.raises(ValueError, match="cannot split 3 image"):
        write_shards(pairs, tmp_path / "s", 4, "tar")
    with pytest.raises(ValueError, match="source_row"):
        write_shards(pairs.assign(source_row=1), tmp_path / "s", 1, "tar")


def test_scored_shards_join_back_with_the_scores_of_the_table(pairs_csv, tmp_path, tiny_specs):
    """Every pair scored once from grouped shards, with the scores ``score --pairs`` gives the table; curation
    writes the shards back with the kept captions only."""
    spec = tiny_specs["hf-clip"]
    pairs = read_pairs(pairs_csv)
    paths = write_shards(pairs, tmp_path / "shards", 2, "tar")
    score_shards(tmp_path / "run", [str(path) for path in paths], [spec], embed=replace(CPU))
    scored = pd.concat([pd.read_parquet(tmp_path / "run" / "shards" / f"{path.stem}.parquet") for path in paths],
                       ignore_index=True)
    assert len(scored) == len(pairs) and scored["uid"].is_unique and (scored["status"] == "ok").all()
    table = score(tmp_path / "table", str(pairs_csv), [spec], embed=CPU).results
    joined = scored.merge(table.rename_axis("source_row").reset_index(), on="source_row", suffixes=("", "_table"))
    assert joined["caption"].tolist() == joined["caption_table"].tolist()
    np.testing.assert_allclose(joined[score_column("cosine", spec)], joined["similarity"], atol=1e-6, rtol=0)
    rules = [parse_rule(f"top:0.5[{spec}]")]
    curation = curate_run(RunLayout(tmp_path / "run"), rules, CurationLayout(tmp_path / "cur"), write_filtered=True,
                          progress=False)
    kept_rows = scored.set_index("uid").loc[pd.read_parquet(curation.out.kept_uids)["uid"], "source_row"]
    filtered = _read_all([curation.out.filtered(path.name) for path in paths])
    assert 0 < len(filtered) < len(pairs) and sorted(filtered["source_row"]) == sorted(kept_rows)
