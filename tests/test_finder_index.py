"""clipeval index: every row an item, failures listed, float16 unit vectors, thumbnails, manifest, resume, refusal."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.images import read_many_bytes
from clipeval.data.options import PairsTableError, SourceOptions
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
    assert manifest["kind"] == "clipeval-index" and manifest["version"] == 2 and manifest["complete"]
    assert manifest["rows"] == build.rows == manifest["images"] == build.images  # a folder: one row per image
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
    with pytest.raises(RunFolderMismatch, match=r"different path \("):
        build_index(second, specs[:1], out, embed=EMBED)
    with pytest.raises(RunFolderMismatch, match=r"different caption_column \('caption' then, 'text' now\)"):
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


def test_a_table_source_is_one_item_per_image_with_its_rows_captions_and_columns(tmp_path, challenge_csv, specs):
    build = build_index(challenge_csv, specs[:1], tmp_path / "index", embed=EMBED)
    items = pd.read_parquet(build.layout.items)
    pairs = pd.read_csv(challenge_csv)
    assert build.rows == len(pairs) and build.images == len(items) == pairs["image"].nunique() < len(pairs)
    assert items["id"].is_unique and items["image"].tolist() == pairs["image"].unique().tolist()
    assert {"match", "image_name", "caption_source"} <= set(items.columns)
    astronaut = items[items["image"] == "images/astronaut.png"].iloc[0]
    rows = pairs.index[pairs["image"] == "images/astronaut.png"].tolist()
    assert astronaut["id"] == "images~astronaut.png" and astronaut["rows"].tolist() == rows
    matched = [row for row in rows if pairs.loc[row, "match"]]
    assert len(matched) < len(rows)  # the challenge set gives the astronaut a mismatched caption too
    assert astronaut["captions"].tolist() == pairs.loc[matched, "caption"].drop_duplicates().tolist()
    assert astronaut["caption"] == pairs.loc[matched[0], "caption"]  # a hard negative is never its caption
    manifest = json.loads(build.layout.manifest.read_text())
    assert manifest["mismatched_rows"] == int((~pairs["match"]).sum()) > 0
    assert json.loads(astronaut["match"]) == pairs.loc[rows, "match"].tolist()  # differs between its rows: a list
    assert astronaut["image_name"] == "astronaut.png"  # the same on all its rows: one value
    named = build_index(challenge_csv, specs[:1], tmp_path / "named", embed=EMBED,
                        options=IndexOptions(id_column="caption_source"))
    ids = pd.read_parquet(named.layout.items)["id"]
    assert ids.is_unique and ids.iloc[0] == "astronaut.png"
    with pytest.raises(ValueError, match="no id column 'nope'"):
        build_index(challenge_csv, specs[:1], tmp_path / "nope", embed=EMBED, options=IndexOptions(id_column="nope"))


def test_a_match_column_that_is_not_true_or_false_is_refused(tmp_path, challenge_csv, specs):
    pairs = pd.read_csv(challenge_csv).astype({"match": object})
    pairs.loc[3, "match"] = "maybe"
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    for image in pairs["image"].unique():
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(ValueError, match="`match` column must be True/False in every row; row 3 holds 'maybe'"):
        build_index(tmp_path / "pairs.csv", specs[:1], tmp_path / "index", embed=EMBED)


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
    with pytest.raises(PairsTableError, match=r"images.csv: missing column\(s\) \['path'"):
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


def write_coco_like(root, images: int = 6, captions: int = 5):
    """A COCO-like pairs table: ``captions`` rows per image (one per caption), as a COCO file gives them."""
    rows = []
    for number in range(images):
        name = f"val2017/00000027579{number}.jpg"
        (root / "val2017").mkdir(parents=True, exist_ok=True)
        pixels = np.zeros((40, 60, 3), dtype=np.uint8)
        pixels[:, : 10 * (number + 1)] = (40 * number, 255 - 40 * number, 128)
        Image.fromarray(pixels).save(root / name)
        rows += [{"image": name, "caption": f"photo {number}, caption {k}", "image_id": 275790 + number,
                  "annotation_id": 100 * number + k} for k in range(captions)]
    pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
    return root / "pairs.csv"


def test_a_coco_like_table_is_one_item_per_image_and_search_returns_distinct_images(tmp_path, specs):
    from clipeval.finder.search import FinderIndex

    pairs = write_coco_like(tmp_path)
    build = build_index(pairs, specs[:1], tmp_path / "index", embed=EMBED)
    assert (build.rows, build.images, build.ok, build.vectors) == (30, 6, 6, {specs[0]: 6})
    manifest = json.loads(build.layout.manifest.read_text())
    assert (manifest["rows"], manifest["images"]) == (30, 6)
    index = FinderIndex.open(build.layout.root, EMBED)
    hits = index.search_text("photo 3, caption 0", k=10)
    assert len(hits) == 6 and len({hit.image for hit in hits}) == 6  # each image once, never once per caption
    assert all(len(hit.captions) == 5 for hit in hits)
    assert hits[0].captions == [f"photo {hits[0].image[-5]}, caption {k}" for k in range(5)]
    items = pd.read_parquet(build.layout.items)
    assert items["annotation_id"].map(json.loads).tolist() == [[100 * n + k for k in range(5)] for n in range(6)]
    assert items["image_id"].tolist() == [275790 + n for n in range(6)]


def test_an_index_of_the_per_row_layout_is_refused_with_how_to_rebuild(tmp_path, specs):
    from clipeval.finder.search import FinderIndex

    pairs = write_coco_like(tmp_path)
    build = build_index(pairs, specs[:1], tmp_path / "index", embed=EMBED)
    manifest = json.loads(build.layout.manifest.read_text())
    build.layout.fingerprint.unlink()  # as version 1 wrote it: no run.json, the manifest says what it is
    build.layout.manifest.write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(ValueError, match=r"version 1 \(one item per row.*rebuild it with `clipeval index "
                                         + re.escape(str(pairs.resolve())) + r" --out .* --overwrite`"):
        FinderIndex.open(build.layout.root, EMBED)
    with pytest.raises(RunFolderMismatch, match=r"different layout_version \(1 then, 2 now\); rerun with "
                                                r"--overwrite"):
        build_index(pairs, specs[:1], build.layout.root, embed=EMBED)
    rebuilt = build_index(pairs, specs[:1], build.layout.root, embed=EMBED, overwrite=True)
    assert rebuilt.built == specs[:1] and FinderIndex.open(build.layout.root, EMBED).items["id"].is_unique
