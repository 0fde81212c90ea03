"""Standard retrieval benchmarks: the Karpathy, webdataset and Hugging Face loaders on small fixtures
in the real formats, built in tmp_path (no network), and the benchmark step on them."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data import benchmarks as bench
from clipeval.data.benchmarks import (
    BENCHMARKS,
    COCO_5K,
    FLICKR_1K,
    POKEMON,
    BenchmarkError,
    captions_set,
    describe_benchmark,
    load_benchmark,
    read_hf_captions,
    read_karpathy,
    read_wds,
)
from clipeval.data.images import read_image
from clipeval.data.retrieval_sets import ImagesNotFoundError, check_images_found, relevance_matrix


def _image_bytes(colour, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _captions(name: str, n: int) -> list[str]:
    return [f"{name} caption {i}" for i in range(n)]


# --- Karpathy split files -------------------------------------------------------------------------

def _karpathy_coco(tmp_path, images=None):
    """A tiny dataset_coco.json: 2 test images (one with 7 captions), train, val and restval ones."""
    entries = [
        ("val2014", "COCO_val2014_000000000001.jpg", "test", 1, 5),
        ("train2014", "COCO_train2014_000000000002.jpg", "train", 2, 5),
        ("val2014", "COCO_val2014_000000000003.jpg", "test", 3, 7),
        ("val2014", "COCO_val2014_000000000004.jpg", "val", 4, 5),
        ("val2014", "COCO_val2014_000000000005.jpg", "restval", 5, 5),
    ]
    data = {"dataset": "coco", "images": [
        {"filepath": folder, "filename": name, "split": split, "imgid": index, "cocoid": 1000 + cocoid,
         "sentences": [{"raw": text, "tokens": text.split(), "imgid": index, "sentid": 10 * index + i}
                       for i, text in enumerate(_captions(name, n))], "sentids": list(range(n))}
        for index, (folder, name, split, cocoid, n) in enumerate(entries)]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    if images is not None:
        for folder, name, *_ in entries:
            (images / folder).mkdir(parents=True, exist_ok=True)
            (images / folder / name).write_bytes(_image_bytes((10, 20, 30), "JPEG"))
    return path


def _karpathy_flickr(tmp_path, images):
    """A tiny dataset_flickr30k.json (no filepath), images in one flat folder."""
    names = [("1000092795.jpg", "test"), ("10002456.jpg", "train"), ("1000268201.jpg", "test"),
             ("1000344755.jpg", "val")]
    images.mkdir(parents=True, exist_ok=True)
    for name, _ in names:
        (images / name).write_bytes(_image_bytes((200, 10, 10), "JPEG"))
    data = {"dataset": "flickr30k", "images": [
        {"filename": name, "split": split, "imgid": index,
         "sentences": [{"raw": text, "tokens": text.split()} for text in _captions(name, 5)]}
        for index, (name, split) in enumerate(names)]}
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(data))
    return path


def test_karpathy_coco_by_url_reads_only_the_test_split(tmp_path):
    dataset = read_karpathy(_karpathy_coco(tmp_path), COCO_5K, images="url")
    assert dataset.name == COCO_5K and dataset.base_dir is None
    assert dataset.images["image"].tolist() == [
        "http://images.cocodataset.org/val2014/COCO_val2014_000000000001.jpg",
        "http://images.cocodataset.org/val2014/COCO_val2014_000000000003.jpg"]
    assert dataset.images["image_id"].tolist() == [1001, 1003]  # cocoid
    # 5 captions per image: the 7-caption image keeps its first 5; one query per caption
    assert dataset.images["n_captions"].tolist() == [5, 5] and len(dataset.queries) == 10
    assert dataset.images["n_captions_left_out"].tolist() == [0, 2]  # counted, not silently dropped
    assert dataset.queries["text"].iloc[5:].tolist() == _captions("COCO_val2014_000000000003.jpg", 5)
    assert describe_benchmark(dataset)["captions_left_out"] == 2
    relevance = relevance_matrix(dataset)
    assert relevance.sum(axis=1).tolist() == [1] * 10  # each caption: its own image only
    assert relevance.sum(axis=0).tolist() == [5, 5]
    assert not any("train2014" in ref or "000000000004" in ref or "000000000005" in ref
                   for ref in dataset.images["image"])  # train, val and restval left out


def test_captions_set_keeps_an_image_whose_captions_are_all_empty():
    rows = pd.DataFrame({"image": ["a.jpg", "a.jpg", "b.jpg", "c.jpg"], "caption": ["a cat", " ", None, "a dog"]})
    dataset = captions_set("x", rows)
    assert dataset.images["image"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert dataset.images["n_captions"].tolist() == [1, 0, 1]
    assert dataset.images["n_captions_left_out"].tolist() == [1, 1, 0]
    assert dataset.queries["text"].tolist() == ["a cat", "a dog"] and dataset.relevant.tolist() == [[0, 0], [1, 2]]
    with pytest.raises(BenchmarkError, match="no image with a non-empty caption"):
        captions_set("x", rows.assign(caption=""))


def test_karpathy_keeps_every_caption_on_request_and_reads_another_split(tmp_path):
    path = _karpathy_coco(tmp_path)
    assert len(read_karpathy(path, "x", images="url", captions_per_image=None).queries) == 12
    restval = read_karpathy(path, "x", images="url", split="restval")
    assert restval.images["image_id"].tolist() == [1005]


def test_karpathy_local_root_with_and_without_the_filepath_folder(tmp_path):
    root = tmp_path / "coco"
    dataset = read_karpathy(_karpathy_coco(tmp_path, images=root), COCO_5K, images=root)
    assert dataset.images["image"].tolist() == ["val2014/COCO_val2014_000000000001.jpg",
                                                "val2014/COCO_val2014_000000000003.jpg"]
    assert check_images_found(dataset) == 2
    assert read_image(dataset.images["image"].iloc[0], base_dir=dataset.base_dir).status == "ok"
    flickr = read_karpathy(_karpathy_flickr(tmp_path, tmp_path / "flickr30k-images"), FLICKR_1K,
                           images=tmp_path / "flickr30k-images")
    assert flickr.images["image"].tolist() == ["1000092795.jpg", "1000268201.jpg"]
    assert flickr.images["image_id"].tolist() == [0, 2] and check_images_found(flickr) == 2


def test_karpathy_missing_images_root_stops_before_any_model(tmp_path):
    dataset = read_karpathy(_karpathy_coco(tmp_path), COCO_5K, images=tmp_path / "no-such-folder")
    with pytest.raises(ImagesNotFoundError, match=r"found 0 of 2 images; looked in .*no-such-folder"):
        check_images_found(dataset)


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "not a Karpathy split file"),
    ('{"annotations": []}', "not a Karpathy split file"),
    ('{"images": {"a": 1}}', "not a Karpathy split file"),
    ('{"images": [{"filename": "a.jpg", "sentences": []}]}', r"image entry 0 lacks \['split'\]"),
    ('{"images": [{"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"x": 1}]}]}',
     "neither raw nor tokens"),
    ("{not json", "cannot read the Karpathy split file"),
])
def test_karpathy_wrong_shapes_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "dataset_coco.json"
    path.write_text(content)
    with pytest.raises(BenchmarkError, match=message):
        read_karpathy(path, COCO_5K, images="url")


def test_karpathy_other_errors(tmp_path):
    coco = _karpathy_coco(tmp_path)
    with pytest.raises(BenchmarkError, match=r"no image in split 'testing'; splits found \(images\): restval \(1\), "
                                             r"test \(2\), train \(1\), val \(1\)"):
        read_karpathy(coco, COCO_5K, images="url", split="testing")
    with pytest.raises(BenchmarkError, match="is the Karpathy file of 'coco', not 'flickr30k'"):
        read_karpathy(coco, FLICKR_1K, images="url", expect_dataset="flickr30k")
    with pytest.raises(BenchmarkError, match="say where the images are"):
        read_karpathy(coco, COCO_5K, images=None)
    with pytest.raises(BenchmarkError, match="no public URL"):
        read_karpathy(_karpathy_flickr(tmp_path, tmp_path / "f"), FLICKR_1K, images="url")
    with pytest.raises(BenchmarkError, match=r"no such file.*caption_datasets\.zip"):
        read_karpathy(tmp_path / "missing.json", COCO_5K, images="url")


# --- CLIP_benchmark webdatasets ---------------------------------------------------------------------

def _write_shard(path, samples):
    with tarfile.open(path, "w") as archive:
        for key, files in samples:
            for extension, data in files.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def _wds(root, split="test", dataset_type="retrieval", n_images=3, per_image=5):
    """A CLIP_benchmark-layout webdataset: <root>/<split>/nshards.txt, 0.tar, 1.tar; dataset_type.txt."""
    (root / split).mkdir(parents=True)
    if dataset_type is not None:
        (root / "dataset_type.txt").write_text(dataset_type + "\n")
    formats = [("webp", "WEBP"), ("png", "PNG"), ("jpg", "JPEG")]
    samples = []
    for index in range(n_images):
        extension, fmt = formats[index % 3]
        text = "\n".join(_captions(f"image {index}", per_image + (index == 0))) + "\n"  # image 0: 6 captions
        samples.append((f"s{index:07d}", {extension: _image_bytes((index * 60, 0, 0), fmt), "txt": text.encode()}))
    _write_shard(root / split / "0.tar", samples[:2])
    _write_shard(root / split / "1.tar", samples[2:])
    (root / split / "nshards.txt").write_text("2\n")
    return root


def test_wds_reads_every_shard_in_order(tmp_path):
    root = _wds(tmp_path / "wds_flickr30k")
    dataset = read_wds(root, FLICKR_1K, cache_dir=tmp_path / "cache")
    assert dataset.images["image_id"].tolist() == ["s0000000", "s0000001", "s0000002"]
    assert dataset.images["n_captions"].tolist() == [5, 5, 5] and len(dataset.queries) == 15
    assert dataset.queries["text"].iloc[:5].tolist() == _captions("image 0", 5)
    assert np.array_equal(relevance_matrix(dataset).sum(axis=0), [5, 5, 5])
    for ref in dataset.images["image"]:  # stored once in the cache, named by content
        assert ref.startswith(str((tmp_path / "cache" / "wds").resolve()))
        assert read_image(ref).status == "ok"
    assert check_images_found(dataset) == 3
    # the split folder and a single shard read the same way
    assert len(read_wds(root / "test", FLICKR_1K, cache_dir=tmp_path / "cache").images) == 3
    assert read_wds(root / "test" / "1.tar", "x", cache_dir=tmp_path / "cache").images["image_id"].tolist() == [
        "s0000002"]


def test_wds_from_the_hub_downloads_only_the_split(tmp_path, monkeypatch):
    import huggingface_hub

    root = _wds(tmp_path / "hub-snapshot")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    dataset = read_wds("hf:clip-benchmark/wds_flickr30k", FLICKR_1K, cache_dir=tmp_path / "cache")
    assert len(dataset.images) == 3
    assert calls == [("clip-benchmark/wds_flickr30k",
                      {"repo_type": "dataset", "allow_patterns": ["test/*", "dataset_type.txt"]})]


def test_wds_hub_without_network_says_how_to_download(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(BenchmarkError, match=r"cannot download .*hf download clip-benchmark/wds_mscoco_captions "
                                             r"--repo-type dataset --include 'test/\*'"):
        read_wds("hf:clip-benchmark/wds_mscoco_captions", COCO_5K, cache_dir=tmp_path / "cache")


def test_wds_errors(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(BenchmarkError, match=r"no such folder or \.tar file"):
        read_wds(tmp_path / "missing", "x", cache_dir=cache)
    classification = _wds(tmp_path / "cls", dataset_type="classification")
    with pytest.raises(BenchmarkError, match="says 'classification'"):
        read_wds(classification, "x", cache_dir=cache)
    other_split = _wds(tmp_path / "train-only", split="train")
    with pytest.raises(BenchmarkError, match=r"train-only: no nshards.txt and no .tar shards .*; splits found: train"):
        read_wds(other_split, "x", cache_dir=cache)
    short = _wds(tmp_path / "short")
    (short / "test" / "1.tar").unlink()
    with pytest.raises(BenchmarkError, match=r"nshards\.txt says 2 shards but 1 are missing"):
        read_wds(short, "x", cache_dir=cache)
    no_text = tmp_path / "no-text" / "test"
    no_text.mkdir(parents=True)
    _write_shard(no_text / "0.tar", [("s0000000", {"webp": _image_bytes((0, 0, 0), "WEBP")})])
    with pytest.raises(BenchmarkError, match=r"sample s0000000 has \['webp'\]"):
        read_wds(no_text.parent, "x", cache_dir=cache)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(BenchmarkError, match="cannot read the shard"):
        read_wds(broken, "x", cache_dir=cache)


# --- Hugging Face datasets ---------------------------------------------------------------------------

def _hf_flickr(with_split=True):
    """nlphuji/flickr30k's layout: image, caption (list of 5), sentids, split, img_id, filename."""
    import datasets

    rows = {"image": [], "caption": [], "sentids": [], "split": [], "img_id": [], "filename": []}
    for index, split in enumerate(["train", "test", "val", "test"]):
        rows["image"].append(Image.new("RGB", (8, 8), (index * 50, 100, 0)))
        rows["caption"].append(_captions(f"flickr {index}", 5))
        rows["sentids"].append([str(5 * index + i) for i in range(5)])
        rows["split"].append(split)
        rows["img_id"].append(str(index))
        rows["filename"].append(f"{index}.jpg")
    if not with_split:
        del rows["split"]
    return datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())


def test_hf_save_to_disk_keeps_the_karpathy_test_rows(tmp_path):
    _hf_flickr().save_to_disk(str(tmp_path / "flickr30k"))
    dataset = read_hf_captions(str(tmp_path / "flickr30k"), FLICKR_1K, cache_dir=tmp_path / "cache")
    assert dataset.images["image_id"].tolist() == ["1", "3"]
    assert len(dataset.queries) == 10 and dataset.queries["text"].iloc[0] == "flickr 1 caption 0"
    assert np.array_equal(relevance_matrix(dataset).sum(axis=0), [5, 5])
    assert all(read_image(ref).status == "ok" for ref in dataset.images["image"])


def test_hf_parquet_file_and_folder(tmp_path):
    (tmp_path / "one").mkdir()
    _hf_flickr().to_parquet(str(tmp_path / "one" / "flickr.parquet"))
    dataset = read_hf_captions(str(tmp_path / "one" / "flickr.parquet"), FLICKR_1K, cache_dir=tmp_path / "cache")
    assert dataset.images["image_id"].tolist() == ["1", "3"]
    (tmp_path / "hub" / "data").mkdir(parents=True)  # the hub's layout: data/<split>-*.parquet
    _hf_flickr(with_split=False).to_parquet(str(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"))
    whole = read_hf_captions(str(tmp_path / "hub"), FLICKR_1K, cache_dir=tmp_path / "cache")
    assert whole.images["image_id"].tolist() == ["0", "1", "2", "3"]  # no split column: every row


def test_hf_without_the_split_is_a_clear_error(tmp_path):
    _hf_flickr().save_to_disk(str(tmp_path / "flickr30k"))
    with pytest.raises(BenchmarkError, match="no row with split = 'testing'; found test, train, val"):
        read_hf_captions(str(tmp_path / "flickr30k"), FLICKR_1K, split="testing", cache_dir=tmp_path / "cache")


# --- load_benchmark: options and the size check -----------------------------------------------------

def test_load_benchmark_checks_the_size_of_the_split(tmp_path):
    root = _wds(tmp_path / "wds")
    with pytest.raises(BenchmarkError, match=r"3 images and 15 captions, where the Flickr30k 1k test \(Karpathy "
                                             r"split, 5 captions per image\) has 1,000 and 5,000; a different split"):
        load_benchmark(FLICKR_1K, {"kind": "wds", "path": str(root)}, tmp_path / "cache")
    dataset = load_benchmark(FLICKR_1K, {"kind": "wds", "path": str(root), "check_size": False}, tmp_path / "cache")
    assert dataset.name == FLICKR_1K and len(dataset.queries) == 15


def test_load_benchmark_passes_a_set_of_the_right_size(tmp_path, monkeypatch):
    monkeypatch.setitem(BENCHMARKS, COCO_5K, bench.Benchmark(COCO_5K, "tiny COCO", "coco", 2, 5, "x"))
    dataset = load_benchmark(COCO_5K, {"kind": "karpathy", "path": str(_karpathy_coco(tmp_path)), "images": "url"})
    assert len(dataset.images) == 2 and len(dataset.queries) == 10
    flickr_file = _karpathy_flickr(tmp_path, tmp_path / "f")
    with pytest.raises(BenchmarkError, match="is the Karpathy file of 'flickr30k', not 'coco'"):
        load_benchmark(COCO_5K, {"kind": "karpathy", "path": str(flickr_file), "images": str(tmp_path / "f")})


@pytest.mark.parametrize("name, source, message", [
    ("coco-1k", {"kind": "wds", "path": "x"}, "unknown benchmark 'coco-1k'; known: coco-5k, flickr30k-1k"),
    (COCO_5K, {"kind": "tfds", "path": "x"}, "kind 'tfds'; use one of karpathy, wds, hf"),
    (COCO_5K, {"kind": "wds", "path": "x", "imagse": "url"}, r"unknown option\(s\) \['imagse'\]"),
    (COCO_5K, {"kind": "karpathy", "path": "x.json"}, "kind karpathy needs images"),
    (COCO_5K, {"kind": "wds"}, "kind wds needs path"),
    (COCO_5K, "hf:clip-benchmark/wds_mscoco_captions", "must be a mapping"),
])
def test_load_benchmark_option_errors(name, source, message):
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark(name, source)


def test_benchmarks_are_described_with_their_split_and_captions_per_image():
    for name in (COCO_5K, FLICKR_1K):
        info = BENCHMARKS[name]
        assert "Karpathy split, 5 captions per image" in info.title and info.n_captions == 5 * info.n_images
    assert (BENCHMARKS[COCO_5K].n_images, BENCHMARKS[FLICKR_1K].n_images) == (5000, 1000)
    pokemon = BENCHMARKS[POKEMON]
    assert (pokemon.n_images, pokemon.n_captions) == (833, 833) and "6 of 833" in pokemon.reference
    for info in BENCHMARKS.values():  # each default source is a valid profile entry
        assert bench.benchmark_options(info.name, info.hub_source)["path"].startswith("hf:")


def test_max_images_evaluates_the_first_images_of_the_checked_set(tmp_path):
    root = _wds(tmp_path / "wds", n_images=3)
    source = {"kind": "wds", "path": str(root), "check_size": False, "max_images": 2}
    dataset = load_benchmark(FLICKR_1K, source, tmp_path / "cache")
    assert dataset.images["image_id"].tolist() == ["s0000000", "s0000001"] and len(dataset.queries) == 10
    assert dataset.queries["text"].iloc[5] == "image 1 caption 0"
    assert np.array_equal(relevance_matrix(dataset).sum(axis=0), [5, 5])
    assert len(load_benchmark(FLICKR_1K, {**source, "max_images": 50}, tmp_path / "cache").images) == 3
    with pytest.raises(BenchmarkError, match="max_images must be a whole number >= 1, not 0"):
        load_benchmark(FLICKR_1K, {**source, "max_images": 0}, tmp_path / "cache")


def test_two_samples_with_the_same_image_bytes_stay_two_images(tmp_path):
    image = _image_bytes((5, 5, 5))
    (tmp_path / "wds" / "test").mkdir(parents=True)
    _write_shard(tmp_path / "wds" / "test" / "0.tar", [(f"s{i}", {"png": image, "txt": f"caption {i}".encode()})
                                                       for i in range(3)])
    dataset = read_wds(tmp_path / "wds", FLICKR_1K, cache_dir=tmp_path / "cache")
    assert dataset.images["image_id"].tolist() == ["s0", "s1", "s2"] and dataset.images["image"].nunique() == 1
    assert dataset.relevant.tolist() == [[0, 0], [1, 1], [2, 2]]


def _pokemon_layout(folder):
    """The Pokémon captions as the hub holds them: data/train-*.parquet (image, text) and a dataset card."""
    import datasets

    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": [{"bytes": _image_bytes((i * 50, 0, 0)), "path": None} for i in range(4)],
                                "text": [f"a pokemon {i}" for i in range(4)]}, features=features).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet"))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                      "    path: data/train-*\n---\n")
    return folder


def test_pokemon_from_the_hub_through_its_snapshot(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = _pokemon_layout(tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    source = {**BENCHMARKS[POKEMON].hub_source, "check_size": False}
    dataset = load_benchmark(POKEMON, source, tmp_path / "cache")
    assert len(dataset.images) == len(dataset.queries) == 4 and dataset.queries["text"].iloc[3] == "a pokemon 3"
    assert np.array_equal(relevance_matrix(dataset), np.eye(4, dtype=bool))


def test_a_hub_dataset_that_cannot_be_fetched_says_how_to_download(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(bench.PairsTableError, match=r"hf download reach-vb/pokemon-blip-captions --repo-type dataset"):
        load_benchmark(POKEMON, BENCHMARKS[POKEMON].hub_source)


# --- the benchmark step: loaders feed the existing retrieval evaluation unchanged -------------------

def test_retrieve_benchmarks_runs_the_retrieval_evaluation_on_a_benchmark(tmp_path, tiny_specs, one_torch_thread):
    from clipeval.data.fetch import FetchOptions
    from clipeval.embed.options import EmbedOptions
    from clipeval.eval.options import RetrievalOptions
    from clipeval.jobs import steps

    root = _wds(tmp_path / "wds", n_images=4)
    run_dir = tmp_path / "run"
    run = steps.retrieve_benchmarks(run_dir, [tiny_specs["hf-clip"]],
                                    {FLICKR_1K: {"kind": "wds", "path": str(root), "check_size": False}},
                                    RetrievalOptions(n_resamples=50),
                                    EmbedOptions(device="cpu", progress=False,
                                                 fetch=FetchOptions(image_cache_dir=tmp_path / "cache")))
    metrics = pd.read_csv(run_dir / "benchmarks" / FLICKR_1K / "metrics.csv")
    assert set(metrics["dataset"]) == {FLICKR_1K} and set(metrics["direction"]) == {"text_to_image", "image_to_text"}
    assert metrics["n_queries"].tolist() == [20] * 3 + [4] * 3  # 20 captions, 4 images
    for name in ("retrieval_ranks.csv", "retrieval_stats.json", "retrieval_stats.log"):
        assert (run_dir / "benchmarks" / FLICKR_1K / name).is_file()
    assert len(pd.read_csv(run_dir / "benchmark_metrics.csv")) == 6
    comparison = pd.read_csv(run_dir / "published_comparison.csv")
    assert set(comparison["status"]) == {"no published number"}  # a tiny random checkpoint has none
    assert "no checkpoint of this run" in run.reason
    assert run.summary.loc[0, "captions_per_image"] == "5" and run.summary.loc[0, "images"] == 4
    assert "retrieve_benchmarks" in json.loads((run_dir / "manifest.json").read_text())["steps"]


def test_retrieve_benchmarks_without_benchmarks_says_why(tmp_path):
    from clipeval.jobs import steps

    run = steps.retrieve_benchmarks(tmp_path, ["dual:outputs/offline/models/dual"], {})
    assert run.comparison.empty and not run.sets and "names no standard benchmark" in run.reason
    assert not (tmp_path / "published_comparison.csv").exists()


def test_retrieve_benchmarks_checks_every_set_before_loading_a_model(tmp_path):
    from clipeval.jobs import steps

    coco = _karpathy_coco(tmp_path)
    with pytest.raises(ImagesNotFoundError, match="found 0 of 2 images"):
        steps.retrieve_benchmarks(tmp_path / "run", ["hf:no/such-model-is-loaded"],
                                  {COCO_5K: {"kind": "karpathy", "path": str(coco), "images": str(tmp_path / "none"),
                                             "check_size": False}})
