"""Searching an index: text, image and similar-item queries against a brute-force float32 ranking, the errors,
thumbnails by id only, approximate search, and `clipeval index` / `clipeval search` run as users run them."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clipeval.data.images import read_many_bytes
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.finder.index import build_index
from clipeval.finder.options import IndexOptions
from clipeval.finder.search import (
    FinderIndex,
    QueryImageError,
    UnknownCheckpoint,
    UnknownItem,
    format_results,
    overlap,
)
from clipeval.layout import checkpoint_slug
from test_finder_index import write_collection

EMBED = EmbedOptions(device="cpu", progress=False)
FLOAT16_SLACK = 2e-3  # a stored float16 unit vector's cosine differs from the float32 one by less than this
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def specs(tiny_specs):
    return [tiny_specs["hf-clip"], tiny_specs["open_clip"]]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("finder-search") / "collection", extra=6)


@pytest.fixture(scope="module")
def index(collection, specs, tmp_path_factory):
    out = tmp_path_factory.mktemp("finder-search-index")
    build_index(collection, specs, out, embed=EMBED)
    return FinderIndex.open(out, EmbedOptions(device="cpu"))


def fresh_float32(index: FinderIndex, collection, spec: str, texts: list[str] = ()):
    """The ok items' image vectors and the texts' vectors computed again in float32, outside the index."""
    ok = index.items[index.items["status"] == "ok"]
    with Embedder(LazyEncoder(spec, EMBED), EMBED) as embedder:
        images = embedder.images(read_many_bytes(ok["image"].tolist(), collection)).of(np.arange(len(ok))).numpy()
        queries = embedder.texts(list(texts)).vectors.numpy() if texts else None
    return ok["id"].tolist(), images, queries


def assert_top_k_of(hits, ids, scores, k):
    """``hits`` are a top-k of ``scores`` (float32 truth by id) up to float16 rounding: each hit's score is its true
    score, ranks and order are right, and no item left out scores clearly above one kept."""
    truth = dict(zip(ids, scores.tolist()))
    assert [hit.rank for hit in hits] == list(range(1, k + 1))
    assert all(first.score >= second.score for first, second in itertools.pairwise(hits))
    for hit in hits:
        assert abs(hit.score - truth[hit.id]) < FLOAT16_SLACK
    kept = {hit.id for hit in hits}
    lowest_kept = min(truth[item_id] for item_id in kept)
    assert all(score <= lowest_kept + FLOAT16_SLACK for item_id, score in truth.items() if item_id not in kept)
    assert all(score >= sorted(scores)[-k] - FLOAT16_SLACK for score in (truth[item_id] for item_id in kept))


def test_search_text_is_the_brute_force_float32_ranking(index, collection, specs):
    texts = ["picture 2: animals/noise.png", "a red square", "stripes"]
    for spec in specs:
        ids, images, queries = fresh_float32(index, collection, spec, texts)
        for text, query in zip(texts, queries):
            hits = index.search_text(text, spec, k=5)
            assert_top_k_of(hits, ids, images @ query, 5)
            assert all(hit.thumbnail == f"thumbnails/{hit.id}.jpg" for hit in hits)
            item = index.items.set_index("id").loc[hits[0].id]
            assert (hits[0].image, hits[0].caption) == (item["image"], item["caption"])


def test_an_indexed_image_finds_itself_first(index, collection, specs):
    for spec in specs:
        ids, images, _ = fresh_float32(index, collection, spec)
        for item_id, vector in zip(ids, images):
            path = collection / index.item(item_id)["image"]
            hits = index.search_image(path, spec, k=3)
            assert hits[0].id == item_id and hits[0].score > 1 - FLOAT16_SLACK
            assert_top_k_of(hits, ids, images @ vector, 3)
        same = index.search_image((collection / "wide.jpg").read_bytes(), spec, k=3)  # bytes, as uploaded
        assert same == index.search_image(str(collection / "wide.jpg"), spec, k=3)


def test_similar_ranks_the_stored_vectors_and_leaves_the_item_out(index, specs):
    for spec in specs:
        vectors, positions = index.vectors(spec)
        stored = np.asarray(vectors, dtype=np.float32)
        ids = index.items["id"].to_numpy()[positions]
        for row, item_id in enumerate(ids):
            hits = index.similar(item_id, spec, k=4)
            scores = stored @ stored[row]
            order = [int(i) for i in np.lexsort((np.arange(len(scores)), -scores)) if i != row][:4]
            assert [hit.id for hit in hits] == ids[order].tolist()
            np.testing.assert_allclose([hit.score for hit in hits], scores[order], atol=1e-6)
            assert item_id not in {hit.id for hit in hits}


def test_unknown_checkpoints_items_and_unusable_queries_are_clear_errors(index, collection, specs):
    with pytest.raises(UnknownCheckpoint, match="no checkpoint 'hf:nope'.*" + specs[0].split(":")[0]):
        index.search_text("a cat", "hf:nope")
    assert index.checkpoint(checkpoint_slug(specs[1])) == specs[1] and index.checkpoint() == specs[0]
    with pytest.raises(UnknownItem, match="no item with id 'nope'"):
        index.similar("nope")
    with pytest.raises(UnknownItem, match="no item with id"):
        index.item("../manifest.json")
    with pytest.raises(UnknownItem, match=r"broken\.jpg.*no vector.*decode_error"):
        index.similar("broken.jpg")
    with pytest.raises(QueryImageError, match="decode_error"):
        index.search_image(b"not an image at all")
    with pytest.raises(QueryImageError, match="format_refused"):
        index.search_image(collection / "vector.png")  # EPS content: refused before any parser runs
    with pytest.raises(QueryImageError, match="missing"):
        index.search_image(collection / "absent.png")
    with pytest.raises(ValueError, match="empty"):
        index.search_text("   ")
    with pytest.raises(ValueError, match="no approximate index"):
        index.search_text("a cat", exact=False)
    with pytest.raises(ValueError, match="k must be"):
        index.search_text("a cat", k=0)


def test_items_and_thumbnails_are_served_by_id_only(index, tmp_path):
    item = index.item("red.png")
    assert json.loads(json.dumps(item)) == item and item["status"] == "ok" and item["width"] == 64
    assert index.item("broken.jpg")["status"] == "decode_error" and index.item("broken.jpg")["width"] is None
    path = index.thumbnail_path("red.png")
    assert path is not None and path.parent == index.layout.thumbnails.resolve() and path.is_file()
    for bad in ("../manifest", "../items.parquet", "/etc/passwd", "broken.jpg", "nope"):
        assert index.thumbnail_path(bad) is None
    # a thumbnail replaced by a link to a file outside the folder is not served
    copy = FinderIndex.open(shutil.copytree(index.layout.root, tmp_path / "copy"))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    copy.layout.thumbnail("red.png").unlink()
    copy.layout.thumbnail("red.png").symlink_to(secret)
    assert copy.thumbnail_path("red.png") is None


def test_overlap_counts_shared_ids():
    from clipeval.finder.search import Hit

    def hits(*ids):
        return [Hit(rank, item_id, 0.0, "", "", "", []) for rank, item_id in enumerate(ids, start=1)]

    assert overlap(hits("a", "b", "c"), hits("c", "d", "a")) == {"count": 2, "jaccard": 0.5}
    assert overlap(hits("a"), hits("b")) == {"count": 0, "jaccard": 0.0}


def test_approximate_search_on_an_index_built_with_one(tmp_path, specs):
    collection = write_collection(tmp_path / "collection", extra=40)
    build_index(collection, specs[:1], tmp_path / "index", embed=EMBED, options=IndexOptions(ann="always"))
    index = FinderIndex.open(tmp_path / "index", EmbedOptions(device="cpu"))
    spec = specs[0]
    assert not index.uses_ann(spec) and index.uses_ann(spec, exact=False)  # small: exact unless asked
    exact = index.search_image(collection / "wide.jpg", k=5)
    assert index._vectors(spec).ann_index is None
    approximate = index.search_image(collection / "wide.jpg", k=5, exact=False)
    assert index._vectors(spec).ann_index is not None  # the faiss index answered
    assert approximate[0].id == exact[0].id == "wide.jpg"
    assert len(approximate) == 5 and all(hit.score <= approximate[0].score for hit in approximate)


def test_a_checkpoint_whose_weights_changed_is_refused(tmp_path, tiny_specs):
    from clipeval.models.tiny import build_hf_clip

    folder = shutil.copytree(tiny_specs["hf-clip"].removeprefix("hf:"), tmp_path / "model")
    spec = f"hf:{folder}"
    collection = write_collection(tmp_path / "collection")
    build_index(collection, [spec], tmp_path / "index", embed=EMBED)
    build_hf_clip(folder, seed=1)  # other weights under the same spec
    with pytest.raises(ValueError, match="other weights than the index was built with"):
        FinderIndex.open(tmp_path / "index", EmbedOptions(device="cpu")).search_text("a cat")


def test_a_query_hashes_the_weights_only_when_the_checkpoint_files_changed(tmp_path, tiny_specs, monkeypatch):
    from clipeval.models.encoder import Encoder

    folder = shutil.copytree(tiny_specs["hf-clip"].removeprefix("hf:"), tmp_path / "model")
    spec = f"hf:{folder}"
    build_index(write_collection(tmp_path / "collection"), [spec], tmp_path / "index", embed=EMBED)
    hashed, digest = [], Encoder.weights_digest

    def counted(self):
        hashed.append(1)
        return digest(self)

    monkeypatch.setattr(Encoder, "weights_digest", counted)
    assert FinderIndex.open(tmp_path / "index", EMBED).search_text("a cat")  # the files as built: no hashing
    assert hashed == []
    for file in folder.iterdir():  # the same bytes written again: the stat fingerprint moves, the weights do not
        file.write_bytes(file.read_bytes())
    assert FinderIndex.open(tmp_path / "index", EMBED).search_text("a cat")
    assert hashed == [1]


def clipeval(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipeval", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=600)


@pytest.mark.slow  # keeps the default suite near 10 min; make test-slow and make reproduce run it
def test_the_command_line_indexes_and_searches_two_checkpoints_side_by_side(tmp_path, specs):
    collection = write_collection(tmp_path / "collection", extra=3)
    out = tmp_path / "index"
    built = clipeval("index", collection, "--out", out, "--checkpoint", specs[0], "--checkpoint", specs[1],
                     "--device", "cpu", "--no-progress")
    assert built.returncode == 0, built.stderr
    assert f"indexed 10 images from 10 rows (8 images read) -> {out}" in built.stdout
    assert f"{specs[0]}: 8 vectors, 2 images without one (failed.csv), built, exact search" in built.stdout

    query = "picture 2: animals/noise.png"
    both = ["--checkpoint", specs[0], "--checkpoint", specs[1]]
    table = clipeval("search", out, query, *both, "--k", "4")
    as_json = clipeval("search", out, query, *both, "--k", "4", "--json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["query"] == {"kind": "text", "value": query} and result["k"] == 4
    assert [block["spec"] for block in result["checkpoints"]] == specs
    index = FinderIndex.open(out, EmbedOptions(device="cpu"))
    lists = []
    for block in result["checkpoints"]:
        assert block["search"] == "exact" and block["vectors"] == 8
        expected = index.search_text(query, block["spec"], k=4)
        assert [hit["id"] for hit in block["hits"]] == [hit.id for hit in expected]
        lists.append({hit["id"] for hit in block["hits"]})
    shared = len(lists[0] & lists[1])
    assert result["overlap"] == {"count": shared, "jaccard": shared / len(lists[0] | lists[1])}
    lines = table.stdout.splitlines()
    assert lines[1].startswith(f"[1] {specs[0]}: exact search over 8 images")
    assert lines[2].startswith(f"[2] {specs[1]}: exact search over 8 images")
    assert lines[3].split()[:4] == ["rank", "[1]", "score", "[1]"]
    assert len(lines) == 4 + 4 + 1  # query, two checkpoints, header, 4 ranks, overlap
    jaccard = result["overlap"]["jaccard"]
    assert lines[-1] == f"overlap of [1] and [2] top 4: {shared} shared ids (Jaccard {jaccard:.3f})"
    top = result["checkpoints"][0]["hits"][0]
    assert lines[4].split()[:3] == ["1", f"{top['score']:.4f}", top["id"]]

    single = clipeval("search", out, "--similar", "red.png", "--k", "2", "--json")
    assert single.returncode == 0, single.stderr
    similar = json.loads(single.stdout)
    assert similar["overlap"] is None and [block["spec"] for block in similar["checkpoints"]] == specs[:1]
    assert [hit["id"] for hit in similar["checkpoints"][0]["hits"]] == [hit.id for hit in index.similar("red.png", k=2)]


@pytest.mark.parametrize(("args", "message"), [
    (["a cat", "--checkpoint", "hf:nope"], "error: the index has no checkpoint 'hf:nope'"),
    (["--similar", "nope"], "error: the index has no item with id 'nope'"),
    (["--image", "{collection}/broken.jpg"], "decode_error"),
    (["a cat", "--similar", "red.png"], "error: give one query"),
])
def test_command_line_errors_are_one_line(index, collection, args, message):
    result = clipeval("search", index.layout.root, *[arg.format(collection=collection) for arg in args])
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_side_by_side_and_table_ids_keep_the_part_that_differs():
    def hit(rank, number, suffix=""):
        item = f"coco~val2017~images~0000002054{number:02d}.jpg{suffix}"
        return {"rank": rank, "id": item, "score": 0.5 - rank / 100, "image": item.replace("~", "/"),
                "caption": f"photo {number}", "captions": [f"photo {number}", "another"], "thumbnail": ""}

    blocks = [{"spec": spec, "search": "exact", "vectors": 40, "hits": [hit(1, n), hit(2, n + 1, "-7")]}
              for spec, n in (("hf:a", 1), ("hf:b", 3))]
    result = {"query": {"kind": "text", "value": "a plane"}, "k": 2, "checkpoints": blocks, "overlap": None}
    side_by_side = format_results(result)
    for ids in (["…000000205401.jpg", "…000000205402.jpg-7"], ["…000000205403.jpg", "…000000205404.jpg-7"]):
        assert all(shown in side_by_side for shown in ids)
    assert "ids shortened: … stands for 'coco~val2017~images~'" in side_by_side
    assert "photo 1 (+1)" in side_by_side  # the first caption, and how many more the image has
    single = format_results({**result, "checkpoints": blocks[:1]}, width=20)
    assert "…000000205401.jpg " in single and "…000000205402.jpg-7" in single
    assert single.count("…000000205401.jpg") == 2  # its image reference keeps its end too
    fitting = [{**hit(1, 1), "id": "a.png"}, {**hit(2, 2), "id": "b.png"}]
    short = {**result, "checkpoints": [{**blocks[0], "hits": fitting}]}
    shown = format_results(short)
    assert " a.png " in shown and " b.png " in shown and "ids shortened" not in shown  # ids that fit: whole
