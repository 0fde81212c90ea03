"""Every source kind round trips into the pairs table; bad tables give one helpful line."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clipeval.data.captions import check_caption
from clipeval.data.fetch import FetchOptions
from clipeval.data.images import read_images
from clipeval.data.options import PairsTableError
from clipeval.data.sources import SOURCE_READERS, detect_source_kind, read_pairs

CAPTIONS = ["a dog on a beach 🐶🏖️", "Um gato laranja dormindo no sofá", "NA", "007", None]
PAIRS = pd.DataFrame({
    "image": ["a.png", "b.png", "c.png", "http://example.org/d.jpg", "e.png"],
    "caption": CAPTIONS,
    "match": [True, False, True, True, False],
    "source_id": [10, 11, 12, 13, 14],
})


def _png(colour=(255, 0, 0), size=(4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _check_round_trip(table: pd.DataFrame, folder: Path) -> None:
    assert list(table.columns) == list(PAIRS.columns)
    assert table.index.tolist() == list(range(len(PAIRS)))
    assert table["image"].tolist() == PAIRS["image"].tolist()
    assert table["caption"].tolist()[:4] == CAPTIONS[:4]  # "NA" and "007" stay text
    assert check_caption(table["caption"].iloc[4])[0] == "empty_caption"
    assert table["match"].tolist() == PAIRS["match"].tolist()
    assert table["source_id"].tolist() == PAIRS["source_id"].tolist()
    assert table.attrs["base_dir"] == str(folder.resolve())


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.tsv", "pairs.parquet", "pairs.jsonl", "pairs.json",
                                  "pairs.csv.gz"])
def test_table_formats_round_trip(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        PAIRS.to_csv(path, index=False)
    elif name.endswith(".csv.gz"):
        PAIRS.to_csv(path, index=False, compression="gzip")
    elif name.endswith(".tsv"):
        PAIRS.to_csv(path, sep="\t", index=False)
    elif name.endswith(".parquet"):
        PAIRS.to_parquet(path, index=False)
    elif name.endswith(".jsonl"):
        PAIRS.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        PAIRS.to_json(path, orient="records", force_ascii=False)
    assert detect_source_kind(path) == "table"
    _check_round_trip(read_pairs(path), tmp_path)


def test_semicolon_table_with_explicit_delimiter_and_other_column_names(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("url;text;extra\na.png;un chien, sur la plage;1\n", encoding="utf-8-sig")  # BOM too
    table = read_pairs(path, "url", "text", delimiter=";")
    assert table.to_dict("records") == [{"url": "a.png", "text": "un chien, sur la plage", "extra": 1}]


@pytest.mark.parametrize(("content", "needle"), [
    ("image;caption\na.png;a dog\n", "--delimiter ';'"),
    ("image;caption\na.png;a dog, running\n", "--delimiter ';'"),
    ("image\tcaption\na.png\ta dog\n", "--delimiter tab"),
    ("image,caption\na.png,a dog, running\n", "quote fields"),
    ("img,text\na.png,a dog\n", "--image-column/--caption-column"),
    ("image,caption\n", "no rows"),
    ("", "empty"),
])
def test_bad_csv_tables_raise_one_helpful_line(tmp_path, content, needle):
    path = tmp_path / "pairs.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PairsTableError) as raised:
        read_pairs(path)
    message = str(raised.value)
    assert needle in message and "\n" not in message and str(path) in message


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("pairs.csv", b"\xff\xfei\x00m\x00", "UTF-8"),
    ("pairs.parquet", b"not parquet", "cannot read"),
    ("pairs.xlsx", b"whatever", "unsupported table format"),
    ("missing.csv", None, "no such file"),
    ("pairs.jsonl", b"", "no rows"),
])
def test_unreadable_tables_raise_one_helpful_line(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PairsTableError, match=needle) as raised:
        read_pairs(path)
    assert "\n" not in str(raised.value)


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(PairsTableError, match="unknown source kind"):
        read_pairs(tmp_path, kind="zip")
    assert set(SOURCE_READERS) == {"table", "folder", "coco", "hf"}


def test_image_folder_with_class_subfolders_and_caption_files(tmp_path):
    root = tmp_path / "photos"
    for relative in ("cats/tabby.jpg", "cats/siamese.png", "dogs/rex.png", "dogs/puppies/bit.webp", "top.png",
                     ".hidden/x.png", "cats/.thumb.png"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(_png())
    (root / "cats" / "tabby.txt").write_text("Um gato malhado 🐱\n", encoding="utf-8")
    (root / "dogs" / "rex.txt").write_text("   \n", encoding="utf-8")
    (root / "cats" / "notes.md").write_text("not an image")

    table = read_pairs(root)

    assert detect_source_kind(root) == "folder"
    assert table["image"].tolist() == ["top.png", "cats/siamese.png", "cats/tabby.jpg", "dogs/rex.png",
                                       "dogs/puppies/bit.webp"]
    assert table["label"].tolist() == ["", "cats", "cats", "dogs", "dogs/puppies"]
    captions = table["caption"].tolist()
    assert captions[2] == "Um gato malhado 🐱"
    assert [check_caption(caption)[0] for caption in captions] == ["empty_caption", "empty_caption", "ok",
                                                                   "empty_caption", "empty_caption"]
    assert table.attrs["base_dir"] == str(root.resolve())
    assert {item.status for item in read_images(table["image"].tolist(), table.attrs["base_dir"])} == {"ok"}


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(PairsTableError, match="no image files found"):
        read_pairs(tmp_path, kind="folder")


def _coco(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    (root / "val2017" / "000000000139.jpg").write_bytes(_png())
    annotations = root / "annotations" / "captions_val2017.json"
    annotations.write_text(json.dumps({
        "info": {}, "licenses": [],
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 4},
                   {"id": 285, "file_name": "000000000285.jpg", "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 139, "caption": "A woman stands in the dining area."},
                        {"id": 2, "image_id": 285, "caption": "A big brown bear."},
                        {"id": 3, "image_id": 139, "caption": "A room with chairs, a table 🍽️."},
                        {"id": 4, "image_id": 999, "caption": "An orphan caption."}],
    }), encoding="utf-8")
    return annotations


def test_coco_captions_file_gives_one_row_per_caption(tmp_path):
    annotations = _coco(tmp_path)

    table = read_pairs(annotations)

    assert detect_source_kind(annotations) == "coco"
    assert list(table.columns) == ["image_id", "annotation_id", "image", "caption"]
    assert table["image_id"].tolist() == [139, 285, 139, 999]
    assert table["annotation_id"].tolist() == [1, 2, 3, 4]
    assert table["caption"].iloc[2] == "A room with chairs, a table 🍽️."
    assert table.attrs["base_dir"] == str((tmp_path / "val2017").resolve())
    statuses = [item.status for item in read_images(table["image"].tolist(), table.attrs["base_dir"])]
    assert statuses == ["ok", "missing", "ok", "bad_reference"]


def test_coco_images_dir_and_column_names_can_be_set(tmp_path):
    annotations = _coco(tmp_path)
    (tmp_path / "elsewhere").mkdir()  # a missing --images-dir stops the read (test_first_hour.py)
    table = read_pairs(annotations, "file", "text", images_dir=tmp_path / "elsewhere")
    assert list(table.columns) == ["image_id", "annotation_id", "file", "text"]
    assert table.attrs["base_dir"] == str((tmp_path / "elsewhere").resolve())


@pytest.mark.parametrize(("document", "needle"), [
    ({"images": []}, "not a COCO captions file"),
    ({"images": [{"file_name": "x.jpg"}], "annotations": []}, "malformed COCO file"),
    ({"images": [], "annotations": []}, "no rows"),
])
def test_bad_coco_files_raise_one_helpful_line(tmp_path, document, needle):
    path = tmp_path / "captions_val.json"
    path.write_text(json.dumps(document))
    with pytest.raises(PairsTableError, match=needle):
        read_pairs(path)


def test_list_captions_give_one_row_per_caption(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"image": "a.png", "caption": ["one", "two"]}\n{"image": "b.png", "caption": []}\n'
                    '{"image": "c.png", "caption": "plain"}\n', encoding="utf-8")
    table = read_pairs(path)
    assert table["image"].tolist() == ["a.png", "a.png", "b.png", "c.png"]
    assert table["caption_index"].tolist() == [0, 1, 0, 0]
    assert [check_caption(caption)[0] for caption in table["caption"]] == ["ok", "ok", "empty_caption", "ok"]
    assert table.index.tolist() == [0, 1, 2, 3]



def _hf_dataset():
    images = [Image.new("RGB", (6, 4), colour) for colour in ((255, 0, 0), (0, 255, 0), (255, 0, 0))]
    return datasets.Dataset.from_dict({"img": images, "text": ["rojo", "verde 🌿", ""], "id": [7, 8, 9]},
                                      features=datasets.Features({"img": datasets.Image(),
                                                                  "text": datasets.Value("string"),
                                                                  "id": datasets.Value("int64")}))


def test_hf_dataset_saved_to_disk_round_trips_through_the_image_cache(tmp_path):
    saved = tmp_path / "ds"
    _hf_dataset().save_to_disk(str(saved))
    cache = tmp_path / "cache"

    table = read_pairs(saved, "img", "text", cache_dir=cache)

    assert detect_source_kind(saved) == "hf"
    assert list(table.columns) == ["img", "text", "id"]
    assert table["id"].tolist() == [7, 8, 9]
    assert table["text"].tolist()[:2] == ["rojo", "verde 🌿"]
    paths = [Path(ref) for ref in table["img"]]
    assert all(path.is_file() and path.is_relative_to(cache.resolve() / "hf") for path in paths)
    assert paths[0] == paths[2]  # identical bytes are stored once
    loaded = read_images(table["img"].tolist(), table.attrs["base_dir"],
                         fetch_options=FetchOptions(image_cache_dir=cache))  # images stored from a dataset: the cache
    assert [item.status for item in loaded] == ["ok"] * 3
    assert np.asarray(loaded[1].image)[0, 0].tolist() == [0, 255, 0]
    assert read_pairs(f"hf:{saved}", "img", "text", cache_dir=cache)["img"].tolist() == table["img"].tolist()


def test_hf_dataset_dict_needs_a_split_when_it_has_several(tmp_path):
    saved = tmp_path / "dd"
    datasets.DatasetDict({"train": _hf_dataset(), "test": _hf_dataset().select([0])}).save_to_disk(str(saved))
    with pytest.raises(PairsTableError, match="pass --split"):
        read_pairs(saved, "img", "text", cache_dir=tmp_path / "cache")
    assert len(read_pairs(saved, "img", "text", split="test", cache_dir=tmp_path / "cache")) == 1


def test_hf_dataset_with_path_column_and_missing_column(tmp_path):
    saved = tmp_path / "paths"
    datasets.Dataset.from_dict({"image": ["a.png", "http://example.org/b.jpg"],
                                "caption": [["x", "y"], ["z"]]}).save_to_disk(str(saved))
    table = read_pairs(saved, cache_dir=tmp_path / "cache")
    assert table["image"].tolist() == ["a.png", "a.png", "http://example.org/b.jpg"]
    assert table["caption"].tolist() == ["x", "y", "z"]
    with pytest.raises(PairsTableError, match=r"missing column\(s\) \['text'\]"):
        read_pairs(saved, "image", "text", cache_dir=tmp_path / "cache")


def test_hf_hub_name_offline_is_one_clear_line(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PairsTableError) as raised:
        read_pairs("hf:someone/no-such-dataset", "image", "text", cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert "hf download someone/no-such-dataset --repo-type dataset --local-dir <folder>" in message
    assert "\n" not in message


def test_gzip_table_is_read_with_its_inner_format(tmp_path):
    path = tmp_path / "pairs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("image\tcaption\na.png\tuma praia ☀️\n")
    assert read_pairs(path)["caption"].tolist() == ["uma praia ☀️"]
