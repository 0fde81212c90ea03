"""clipeval index: every row an item, failures listed, float16 unit vectors, thumbnails, manifest, resume, refusal."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.images import read_many_bytes
from clipeval.data.options import SourceOptions
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.finder.index import build_index, item_ids
from clipeval.finder.options import IndexOptions
from clipeval.layout import IndexLayout, RunFolderMismatch, checkpoint_slug

EMBED = EmbedOptions(device="cpu", progress=False)
SAFE_ID = re.compile(r"^[A-Za-z0-9._~%-]+$")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_collection(root, extra: int = 0):
    """A folder of distinct images (one large, one tall, one in a subfolder), captions beside most, and two
    files that are not usable images: text named .jpg, and an EPS named .png (a format outside the allow-list)."""
    rng = np.random.default_rng(0)
    sizes = {"red.png": (64, 48), "wide.jpg": (600, 300), "animals/noise.png": (90, 120), "tiny.png": (20, 12),
             "animals/tall.jpg": (300, 700)}
    sizes.update({f"extra{i}.png": (40, 40) for i in range(extra)})
    for number, (name, (width, height)) in enumerate(sizes.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[..., number % 3] = 255 * (number % 2)
        Image.fromarray(pixels).save(path)
        if name != "tiny.png":
            path.with_suffix(".txt").write_text(f"picture {number}: {name}")
    (root / "broken.jpg").write_bytes(b"this is text, not an image")
    (root / "vector.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    return root


@pytest.fixture(scope="module")
def specs(tiny_specs):
    return [tiny_specs["hf-clip"], tiny_specs["open_clip"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory, specs):
    root = tmp_path_factory.mktemp("finder-index")
    collection = write_collection(root / "collection")
    build = build_index(collection, specs, root / "index", embed=EMBED)
    return collection, build


def test_every_row_is_an_item_and_every_failure_is_listed(built, specs):
    collection, build = built
    layout = build.layout
    items = pd.read_parquet(layout.items)
    files = sorted(path.relative_to(collection).as_posix() for path in collection.rglob("*")
                   if path.suffix in (".png", ".jpg"))
    assert sorted(items["image"]) == files and build.rows == len(files)
    assert items["id"].is_unique and all(SAFE_ID.match(item_id) for item_id in items["id"])
    assert not any(item_id.startswith(".") for item_id in items["id"])
    status = dict(zip(items["image"], items["status"]))
    assert status["broken.jpg"] == "decode_error" and status["vector.png"] == "format_refused"
    assert {name for name, value in status.items() if value == "ok"} == set(files) - {"broken.jpg", "vector.png"}
    failed = pd.read_csv(layout.failed, keep_default_na=False)
    assert list(failed.columns) == ["id", "row", "image", "checkpoint", "status", "error"]
    for spec in specs:
        listed = failed[failed["checkpoint"] == spec]
        assert dict(zip(listed["image"], listed["status"])) == {"broken.jpg": "decode_error",
                                                                 "vector.png": "format_refused"}
        assert all(listed["error"].str.len() > 0)
        positions = np.load(layout.vector_ids(spec))
        # nothing silently missing: every row has a vector or a failed.csv line, never both
        assert sorted(positions.tolist() + listed["row"].tolist()) == list(range(len(items)))
        assert build.vectors[spec] == len(positions) == 5 and build.failed[spec] == 2
    assert items.loc[items["image"] == "red.png", "caption"].item() == "picture 0: red.png"
    assert items.loc[items["image"] == "tiny.png", "caption"].item() == ""  # no caption file: empty, still indexed
    assert items.loc[items["image"] == "animals/noise.png", "label"].item() == "animals"  # the source's column
    assert items.loc[items["image"] == "wide.jpg", ["width", "height"]].values.tolist() == [[600, 300]]


def test_vectors_are_float16_unit_rows_equal_to_the_embedding_path(built, specs):
    collection, build = built
    items = pd.read_parquet(build.layout.items)
    for spec in specs:
        vectors = np.load(build.layout.vectors(spec))
        positions = np.load(build.layout.vector_ids(spec))
        assert vectors.dtype == np.float16 and vectors.shape[0] == 5
        assert (np.diff(positions) > 0).all() and (items["status"].to_numpy()[positions] == "ok").all()
        np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
        with Embedder(LazyEncoder(spec, EMBED), EMBED) as embedder:  # computed again, independently
            expected = embedder.images(read_many_bytes(items["image"].iloc[positions].tolist(), collection))
        np.testing.assert_allclose(vectors.astype(np.float32), expected.of(np.arange(5)).numpy(), atol=1e-3)


def test_thumbnails_are_jpegs_with_a_long_side_of_at_most_256(built):
    _, build = built
    items = pd.read_parquet(build.layout.items)
    for row in items.itertuples():
        thumbnail = build.layout.thumbnail(row.id)
        if row.status != "ok":
            assert not thumbnail.exists()
            continue
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and max(image.size) <= 256
            if max(row.width, row.height) >= 256:
                assert max(image.size) == 256  # scaled down to 256, aspect kept
                assert abs(image.size[0] / image.size[1] - row.width / row.height) < 0.02
            else:
                assert image.size == (row.width, row.height)  # never enlarged
    assert sorted(path.name for path in build.layout.thumbnails.iterdir()) == sorted(
        f"{item_id}.jpg" for item_id in items.loc[items["status"] == "ok", "id"])


def test_the_manifest_records_each_checkpoint(built, specs):
    collection, build = built
    manifest = json.loads(build.layout.manifest.read_text())
    assert manifest["kind"] == "clipeval-index" and manifest["version"] == 1 and manifest["complete"]
    assert manifest["rows"] == build.rows
    assert manifest["source"]["path"] == str(collection.resolve()) and manifest["source"]["kind"] == "folder"
    assert list(manifest["checkpoints"]) == specs
    for spec, entry in manifest["checkpoints"].items():
        vectors = np.load(build.layout.vectors(spec))
        assert entry["spec"] == spec and re.fullmatch(r"[0-9a-f]{40}", entry["model_key"])
        assert re.fullmatch(r"[0-9a-f]{64}", entry["weights"])
        assert entry["preprocess"] and entry["dim"] == vectors.shape[1] and entry["vectors"] == len(vectors)
        assert entry["dtype"] == "float16" and entry["ann"] is None  # 5 vectors: exact search
        assert build.layout.vectors(spec).name == f"{checkpoint_slug(spec)}.npy"
    first, second = (manifest["checkpoints"][spec]["weights"] for spec in specs)
    assert first != second


def test_a_rerun_skips_up_to_date_checkpoints_and_overwrite_rebuilds(tmp_path, specs, capsys):
    collection = write_collection(tmp_path / "collection")
    out = tmp_path / "index"
    build_index(collection, specs, out, embed=EMBED)
    layout = IndexLayout(out)
    stamps = {spec: layout.vectors(spec).stat().st_mtime_ns for spec in specs}
    capsys.readouterr()
    again = build_index(collection, specs, out, embed=EMBED)
    assert again.skipped == specs and again.built == []
    assert {spec: layout.vectors(spec).stat().st_mtime_ns for spec in specs} == stamps
    assert capsys.readouterr().err.count("skipped") == 2
    assert len(pd.read_csv(layout.failed)) == 4  # the skipped checkpoints' failures are still listed

    rebuilt = build_index(collection, specs, out, embed=EMBED, overwrite=True)
    assert rebuilt.built == specs and rebuilt.skipped == []
    assert all(layout.vectors(spec).stat().st_mtime_ns != stamps[spec] for spec in specs)

    write_collection(collection, extra=2)  # the same source with two more images: other items, embedded again
    grown = build_index(collection, specs[:1], out, embed=EMBED)
    assert grown.built == specs[:1] and grown.vectors == {specs[0]: 7}
    assert not layout.vectors(specs[1]).exists()  # built for the earlier items: dropped, not kept stale
    assert list(json.loads(layout.manifest.read_text())["checkpoints"]) == specs[:1]
    assert set(pd.read_csv(layout.failed)["checkpoint"]) == {specs[0]}


def test_a_changed_image_is_embedded_again(tmp_path, specs):
    collection = write_collection(tmp_path / "collection")
    out = tmp_path / "index"
    first = build_index(collection, specs[:1], out, embed=EMBED)
    before = np.load(first.layout.vectors(specs[0]))
    Image.new("RGB", (64, 48), (0, 200, 0)).save(collection / "red.png")  # same name, other content
    second = build_index(collection, specs[:1], out, embed=EMBED)
    assert second.built == specs[:1]
    assert not np.array_equal(before, np.load(second.layout.vectors(specs[0])))
    with Image.open(second.layout.thumbnail("red.png")) as thumbnail:
        assert thumbnail.getpixel((32, 24))[1] > 150  # the thumbnail follows the new content


def test_a_folder_holding_another_source_or_other_files_is_refused(tmp_path, specs):
    first = write_collection(tmp_path / "first")
    second = write_collection(tmp_path / "second")
    out = tmp_path / "index"
    build_index(first, specs[:1], out, embed=EMBED)
    with pytest.raises(RunFolderMismatch, match="another source"):
        build_index(second, specs[:1], out, embed=EMBED)
    with pytest.raises(RunFolderMismatch, match="another source"):
        build_index(first, specs[:1], out, reading=SourceOptions(caption_column="text"), embed=EMBED)
    replaced = build_index(second, specs[:1], out, embed=EMBED, overwrite=True)
    assert json.loads(replaced.layout.manifest.read_text())["source"]["path"] == str(second.resolve())

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(RunFolderMismatch, match="holds no clipeval index"):
            build_index(first, specs[:1], other, embed=EMBED, overwrite=overwrite)
    assert (other / "keep.txt").read_text() == "mine"


def test_a_table_source_keeps_its_columns_and_repeated_images_get_unique_ids(tmp_path, challenge_csv, specs):
    build = build_index(challenge_csv, specs[:1], tmp_path / "index", embed=EMBED)
    items = pd.read_parquet(build.layout.items)
    pairs = pd.read_csv(challenge_csv)
    assert len(items) == len(pairs) and items["id"].is_unique
    assert {"match", "image_name", "caption_source"} <= set(items.columns)
    assert items["caption"].tolist() == pairs["caption"].tolist()
    first = items[items["image"] == "images/astronaut.png"]["id"].tolist()
    assert first == ["images~astronaut.png", "images~astronaut.png-1", "images~astronaut.png-2"]
    named = build_index(challenge_csv, specs[:1], tmp_path / "named", embed=EMBED,
                        options=IndexOptions(id_column="caption_source"))
    ids = pd.read_parquet(named.layout.items)["id"]
    assert ids.is_unique and ids.iloc[0] == "astronaut.png"
    with pytest.raises(ValueError, match="no id column 'nope'"):
        build_index(challenge_csv, specs[:1], tmp_path / "nope", embed=EMBED, options=IndexOptions(id_column="nope"))


def test_item_ids_are_flat_safe_and_unique():
    ids = item_ids(["a/b.jpg", "a~b.jpg", "a/b.jpg", "../../etc/passwd", ".hidden.png", "", None,
                    "https://example.com/x y.jpg", "x" * 300, "é.png"])
    assert len(set(ids)) == len(ids) and all(SAFE_ID.match(item_id) for item_id in ids)
    assert ids[:3] == ["a~b.jpg", "a~b.jpg-1", "a~b.jpg-2"]
    assert ids[3] == "%2E%2E~%2E%2E~etc~passwd" and ids[4].startswith("%2E")
    assert ids[5:7] == ["row-5", "row-6"] and ids[7] == "example.com~x%20y.jpg"
    assert len(ids[8]) <= 120 and ids[9] == "%C3%A9.png"


def test_the_approximate_index_is_built_when_asked(tmp_path, specs):
    collection = write_collection(tmp_path / "collection", extra=40)
    build = build_index(collection, specs[:1], tmp_path / "index", embed=EMBED, options=IndexOptions(ann="always"))
    spec = specs[0]
    assert build.layout.ann(spec).is_file() and build.layout.ann_params(spec).is_file()
    described = json.loads(build.layout.manifest.read_text())["checkpoints"][spec]["ann"]
    assert described["n"] == build.vectors[spec] == 45 and described["calibrated_on"] == "captions"


def test_a_table_without_captions_is_a_collection_of_images(tmp_path, specs):
    collection = write_collection(tmp_path / "collection")
    pd.DataFrame({"image_id": ["a", "b", "c"], "image": ["red.png", "wide.jpg", "gone.png"]}).to_csv(
        collection / "images.csv", index=False)
    build = build_index(collection / "images.csv", specs[:1], tmp_path / "index", embed=EMBED,
                        options=IndexOptions(id_column="image_id"))
    items = pd.read_parquet(build.layout.items)
    assert items[["id", "caption", "status"]].values.tolist() == [["a", "", "ok"], ["b", "", "ok"],
                                                                   ["c", "", "missing"]]
    assert "image_id" in items.columns and build.vectors == {specs[0]: 2}
    with pytest.raises(Exception, match="missing column"):
        build_index(collection / "images.csv", specs[:1], tmp_path / "other", embed=EMBED,
                    reading=SourceOptions(image_column="path"))


def test_a_collection_with_no_usable_image_is_an_empty_index(tmp_path, specs):
    from clipeval.finder.search import FinderIndex

    (tmp_path / "collection").mkdir()
    (tmp_path / "collection" / "broken.jpg").write_bytes(b"not an image")
    build = build_index(tmp_path / "collection", specs[:1], tmp_path / "index", embed=EMBED)
    vectors = np.load(build.layout.vectors(specs[0]))
    dim = json.loads(build.layout.manifest.read_text())["checkpoints"][specs[0]]["dim"]
    assert vectors.shape == (0, dim) and dim > 0 and build.failed == {specs[0]: 1}
    assert FinderIndex.open(build.layout.root, EMBED).search_text("anything") == []
