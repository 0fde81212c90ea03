"""Zero-shot classification: agreement with CLIP_benchmark's logic image by image, the class-embedding cache, the
classification-set readers, the packaged class names and templates, and the classification metrics."""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import open_clip.zero_shot_metadata as open_clip_lists
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from clipeval.data.classification_sets import (
    ClassificationSet,
    class_counts,
    read_hf_classification,
    read_image_folder_classes,
    read_scene_classes,
    read_shard_classes,
)
from clipeval.data.options import PairsTableError
from clipeval.data.scenes import COLOURS, FRAMES, PLURALS, SHAPES, generate_scenes, scene_from_row
from clipeval.data.zero_shot_prompts import (
    PROMPT_FILES,
    check_templates,
    fill_template,
    imagenet_folder_classnames,
    packaged_prompts,
    read_classnames,
    read_folder_classnames,
    read_templates,
)
from clipeval.embed.engine import Embedder, LazyEncoder
from clipeval.embed.options import EmbedOptions
from clipeval.eval.zero_shot_classification import class_embeddings, zero_shot_classify
from clipeval.metrics.classification import (
    bootstrap_mean_per_group,
    confusion_table,
    mean_per_group_rate,
    per_class_table,
    top_k_chance,
    worst_classes,
)
from clipeval.models.registry import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["red", "green", "blue", "sky", "grass", "fire"]
TEMPLATES = ["a photo of a {c}.", "a {c} thing", "{c}"]
OPTIONS = EmbedOptions(device="cpu", progress=False)


def _noise_image(rng, side=32):
    """An image around a random colour, so that images differ and a random model does not predict one class."""
    return Image.fromarray(np.clip(rng.integers(0, 256, 3) + rng.normal(0, 60, (side, side, 3)), 0, 255)
                           .astype(np.uint8))


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """Six class folders of five images each."""
    root = tmp_path_factory.mktemp("classes")
    rng = np.random.default_rng(1)
    for name in CLASSES:
        (root / name).mkdir()
        for index in range(5):
            _noise_image(rng).save(root / name / f"{index}.png")
    return root


def clip_benchmark_zero_shot(encoder, images, labels, classnames, templates):
    """CLIP_benchmark's ``metrics/zeroshot_classification.py`` (clip-benchmark 1.6.2), re-implemented on the encoder
    interface (its ``encode_texts`` tokenises and encodes as ``model.encode_text(tokenizer(texts))`` does):
    ``zero_shot_classifier`` (per class: every template filled, each embedding normalised, averaged, the mean
    normalised), ``run_classification`` (``100 * normalised image @ classifier``), ``accuracy`` (``topk``) and
    ``balanced_accuracy_score`` for the mean per-class recall.

    Returns:
        ``(top-5 class ids per image, classifier (C, D), {"acc1", "acc5", "mean_per_class_recall"})``.
    """
    with torch.no_grad():
        weights = []
        for classname in classnames:
            texts = [template.format(c=classname) for template in templates]
            class_embedding = F.normalize(encoder.encode_texts(texts), dim=-1).mean(dim=0)
            class_embedding /= class_embedding.norm()
            weights.append(class_embedding)
        classifier = torch.stack(weights, dim=1)
        pixels = torch.stack([encoder.preprocess(image) for image in images])
        logits = 100.0 * F.normalize(encoder.encode_images(pixels), dim=-1) @ classifier
    target = torch.tensor(labels)
    pred = logits.topk(5, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    acc1, acc5 = (float(correct[:k].reshape(-1).float().sum(0, keepdim=True).numpy()[0]) / len(target)
                  for k in (1, 5))
    recall = balanced_accuracy_score(target, logits.argmax(axis=1))
    return pred.t().numpy(), classifier.T, {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": recall}


@pytest.mark.parametrize("family", ["hf-clip", "open_clip"])
def test_predictions_and_metrics_equal_clip_benchmarks_image_by_image(tiny_specs, class_folder, family):
    dataset = read_image_folder_classes(class_folder)
    report = zero_shot_classify(tiny_specs[family], dataset, TEMPLATES, OPTIONS, n_resamples=200)
    encoder = load_encoder(tiny_specs[family], "cpu", "fp32", progress=False)
    images = [Image.open(class_folder / ref).convert("RGB") for ref in dataset.images["image"]]
    top5, classifier, expected = clip_benchmark_zero_shot(encoder, images, dataset.images["label"].tolist(),
                                                          dataset.classnames, TEMPLATES)
    predictions = report.predictions
    assert np.stack(predictions["top_classes"].to_list()).tolist() == top5.tolist()  # every image, every rank
    assert predictions["predicted"].tolist() == top5[:, 0].tolist()
    assert predictions["predicted"].nunique() >= 2  # a comparison of more than one constant answer
    metrics = report.metrics.set_index("metric")["estimate"]
    assert metrics["top1_accuracy"] == pytest.approx(expected["acc1"], abs=1e-12)
    assert metrics["top5_accuracy"] == pytest.approx(expected["acc5"], abs=1e-12)
    assert metrics["mean_per_class_recall"] == pytest.approx(expected["mean_per_class_recall"], abs=1e-12)
    with Embedder(LazyEncoder(tiny_specs[family], OPTIONS), OPTIONS) as embedder:  # the same templates averaged
        vectors = class_embeddings(embedder, dataset.classnames, TEMPLATES).vectors
    assert torch.allclose(vectors, classifier, atol=1e-6)


def test_the_report_has_chance_levels_cis_per_class_recall_and_the_confusion(tiny_specs, class_folder):
    dataset = read_image_folder_classes(class_folder)
    report = zero_shot_classify(tiny_specs["hf-clip"], dataset, TEMPLATES, OPTIONS, n_resamples=200)
    metrics = report.metrics.set_index("metric")
    assert metrics["chance"].tolist() == [pytest.approx(1 / 6), pytest.approx(5 / 6), pytest.approx(1 / 6)]
    assert (metrics["ci_low"] <= metrics["estimate"]).all() and (metrics["estimate"] <= metrics["ci_high"]).all()
    assert not metrics["trivial"].any() and (metrics["n_images"] == 30).all()
    labels, predicted = dataset.images["label"].to_numpy(), report.predictions["predicted"].to_numpy(int)
    square = confusion_matrix(labels, predicted, labels=range(6))
    pivot = report.confusion.pivot(index="label", columns="predicted", values="n_images")
    assert pivot.reindex(index=range(6), columns=range(6)).fillna(0).to_numpy(int).tolist() == square.tolist()
    recall = np.diag(square) / square.sum(axis=1)
    assert report.per_class["recall"].tolist() == pytest.approx(recall.tolist())
    assert report.per_class["n_predicted"].tolist() == square.sum(axis=0).tolist()
    worst = worst_classes(report.per_class, 3)
    assert worst["recall"].is_monotonic_increasing and worst["recall"].iloc[0] == recall.min()


def test_the_class_embedding_cache_is_hit_the_second_time_and_not_by_another_template_set(tiny_specs, class_folder):
    dataset = read_image_folder_classes(class_folder)
    first = zero_shot_classify(tiny_specs["open_clip"], dataset, TEMPLATES, OPTIONS, n_resamples=10)
    assert (first.stats["class_vectors_from_cache"], first.stats["class_vectors_computed"]) == (0, 6)
    again = zero_shot_classify(tiny_specs["open_clip"], dataset, TEMPLATES, OPTIONS, n_resamples=10)
    assert (again.stats["class_vectors_from_cache"], again.stats["class_vectors_computed"]) == (6, 0)
    assert not again.stats["model_loaded"]  # class vectors and images all read from the cache
    assert again.predictions["top_scores"].tolist() == first.predictions["top_scores"].tolist()
    other = zero_shot_classify(tiny_specs["open_clip"], dataset, TEMPLATES[:2], OPTIONS, n_resamples=10)
    assert (other.stats["class_vectors_from_cache"], other.stats["class_vectors_computed"]) == (0, 6)
    assert other.predictions["top_scores"].tolist() != first.predictions["top_scores"].tolist()
    with Embedder(LazyEncoder(tiny_specs["open_clip"], OPTIONS), OPTIONS) as embedder:
        reordered = class_embeddings(embedder, CLASSES, TEMPLATES[::-1])  # another list: its own vectors
    assert reordered.from_cache == 0


def test_unusable_images_keep_their_rows_with_a_status_and_are_counted(tiny_specs, class_folder, tmp_path):
    full = zero_shot_classify(tiny_specs["hf-clip"], read_image_folder_classes(class_folder), TEMPLATES, OPTIONS,
                              n_resamples=10).predictions
    varied = full.drop_duplicates("predicted")  # images the model tells apart, so a row given another's answer shows
    assert len(varied) >= 2
    (tmp_path / "outside.png").write_bytes((class_folder / varied["image"].iloc[0]).read_bytes())
    (class_folder / "red" / "broken.png").write_bytes(b"not an image")
    images = pd.DataFrame({"image": ["../outside.png", "red/broken.png", *varied["image"]],
                           "label": np.array([0, 0, *varied["label"]], dtype=np.int64)})
    try:
        dataset = ClassificationSet("mixed", images, read_image_folder_classes(class_folder).classnames, "test",
                                    str(class_folder))
        report = zero_shot_classify(tiny_specs["hf-clip"], dataset, TEMPLATES, OPTIONS, n_resamples=10)
    finally:
        (class_folder / "red" / "broken.png").unlink()
    predictions, ok = report.predictions, len(varied)
    assert predictions["status"].tolist() == ["outside_root", "decode_error"] + ["ok"] * ok
    assert predictions["predicted"].isna().tolist() == [True, True] + [False] * ok
    assert predictions["correct_top1"].isna().tolist() == [True, True] + [False] * ok
    assert predictions["predicted"].iloc[2:].tolist() == varied["predicted"].tolist()  # each row its own answer
    assert predictions["top_classes"].iloc[2:].tolist() == varied["top_classes"].tolist()
    assert (report.metrics["n_images"] == ok).all() and (report.metrics["n_images_unusable"] == 2).all()
    assert report.per_class["n_images"].sum() == ok


def test_top5_of_fewer_classes_is_trivial(tiny_specs, class_folder):
    images = pd.DataFrame({"image": ["red/0.png", "green/1.png", "blue/2.png"],
                           "label": np.array([0, 1, 2], dtype=np.int64)})
    dataset = ClassificationSet("three", images, ("red", "green", "blue"), "test", str(class_folder))
    metrics = zero_shot_classify(tiny_specs["hf-clip"], dataset, TEMPLATES, OPTIONS, n_resamples=10).metrics
    assert metrics["trivial"].tolist() == [False, True, False] and metrics["estimate"].iloc[1] == 1.0
    assert metrics["chance"].tolist() == [pytest.approx(1 / 3), 1.0, pytest.approx(1 / 3)]


def test_malformed_templates_and_sets_fail_with_one_line(tiny_specs, class_folder):
    dataset = read_image_folder_classes(class_folder)
    for templates, fragment in ((["a photo"], "must hold the class name once"), ([], "no template"),
                                (["a {c} and a {c}"], "2 field(s)"), (["a {name}"], "field(s) ['name']"),
                                (["a {c"], "literal brace")):
        with pytest.raises(PairsTableError, match=re.escape(fragment)):
            zero_shot_classify(tiny_specs["hf-clip"], dataset, templates, OPTIONS)
    labels = pd.DataFrame({"image": ["a.png", "b.png"], "label": np.array([0, 3], dtype=np.int64)})
    with pytest.raises(PairsTableError, match=r"1 labels are outside the 2 class names \(0\.\.1\), e\.g\. 3"):
        ClassificationSet("bad", labels, ("x", "y"), "test")
    with pytest.raises(PairsTableError, match="int64"):
        ClassificationSet("bad", labels.astype({"label": float}), ("x", "y"), "test")
    with pytest.raises(PairsTableError, match="no images"):
        ClassificationSet("bad", labels.iloc[:0], ("x", "y"), "test")


# --- readers --------------------------------------------------------------------------------------------------

def test_image_folders_are_classes_in_torchvisions_order(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("b", "a", "C", ".hidden", "a/nested"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for path in ("b/1.png", "a/2.jpg", "a/nested/3.png", "C/4.png", ".hidden/5.png", "loose.png"):
        _noise_image(rng, 8).save(tmp_path / path)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    dataset = read_image_folder_classes(tmp_path, {"C": "cat", "a": "ant", "b": "bee"}, name="mine")
    assert dataset.classnames == ("cat", "ant", "bee")  # sorted folders: C, a, b (as torchvision's find_classes)
    assert dataset.images[["image", "label"]].values.tolist() == [["C/4.png", 0], ["a/2.jpg", 1],
                                                                   ["a/nested/3.png", 1], ["b/1.png", 2]]
    assert dataset.name == "mine" and dataset.base_dir == str(tmp_path.resolve())
    assert class_counts(dataset).tolist() == [1, 2, 1]
    assert read_image_folder_classes(tmp_path).classnames == ("C", "a", "b")
    assert read_image_folder_classes(tmp_path, ["x", "y", "z"]).classnames == ("x", "y", "z")
    mapping = tmp_path / "names.tsv"
    mapping.write_text("C\tcat\na\tant\nb\tbee\n")
    assert read_image_folder_classes(tmp_path, mapping).classnames == ("cat", "ant", "bee")


def test_image_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(PairsTableError, match="no such folder"):
        read_image_folder_classes(tmp_path / "absent")
    with pytest.raises(PairsTableError, match="no class subfolders"):
        read_image_folder_classes(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _noise_image(np.random.default_rng(0), 8).save(tmp_path / "a" / "1.png")
    with pytest.raises(PairsTableError, match=re.escape("1 class folder(s) hold no image file, e.g. 'b'")):
        read_image_folder_classes(tmp_path)
    _noise_image(np.random.default_rng(0), 8).save(tmp_path / "b" / "1.png")
    with pytest.raises(PairsTableError, match=re.escape("no name in the class names, e.g. 'b'")):
        read_image_folder_classes(tmp_path, {"a": "ant"})
    with pytest.raises(PairsTableError, match="2 class folders but 3 class names"):
        read_image_folder_classes(tmp_path, ["x", "y", "z"])
    bad = tmp_path / "names.tsv"
    bad.write_text("a ant\n")
    with pytest.raises(PairsTableError, match="is not 'folder<TAB>name'"):
        read_folder_classnames(bad)


def _hf_images(n=6):
    rng = np.random.default_rng(2)
    return [_noise_image(rng, 16) for _ in range(n)]


def test_a_hugging_face_dataset_names_its_classes_from_its_class_label(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "eel"]),
                                  "id": datasets.Value("int64")})
    data = {"image": _hf_images(), "label": [2, 0, 1, 1, 0, 2], "id": list(range(10, 16))}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "saved"))
    dataset = read_hf_classification(tmp_path / "saved", cache_dir=tmp_path / "cache")
    assert dataset.classnames == ("cat", "dog", "eel") and dataset.name == "saved"
    assert dataset.images["label"].tolist() == [2, 0, 1, 1, 0, 2] and dataset.images["id"].tolist() == [*range(10, 16)]
    assert all(ref.startswith(str((tmp_path / "cache").resolve())) for ref in dataset.images["image"])
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict(data, features=features),
                                   "validation": datasets.Dataset.from_dict(
                                       {key: values[:2] for key, values in data.items()}, features=features)})
    splits.save_to_disk(str(tmp_path / "splits"))
    validation = read_hf_classification(tmp_path / "splits", split="validation", cache_dir=tmp_path / "cache")
    assert validation.images["label"].tolist() == [2, 0] and validation.classnames == ("cat", "dog", "eel")
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "data.parquet"))
    parquet = read_hf_classification(tmp_path / "data.parquet", cache_dir=tmp_path / "cache")
    assert parquet.classnames == ("cat", "dog", "eel") and parquet.images["label"].tolist() == data["label"]


def test_hugging_face_labels_without_a_class_label_need_names_or_are_text(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = _hf_images(3)
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "label": datasets.Value("int64")})
                               ).save_to_disk(str(tmp_path / "numbers"))
    with pytest.raises(PairsTableError, match="the labels are numbers but the data names no classes"):
        read_hf_classification(tmp_path / "numbers", cache_dir=tmp_path / "cache")
    named = read_hf_classification(tmp_path / "numbers", classnames=["a", "b"], cache_dir=tmp_path / "cache")
    assert named.classnames == ("a", "b")
    with pytest.raises(PairsTableError, match="outside the 1 class names"):
        read_hf_classification(tmp_path / "numbers", classnames=["a"], cache_dir=tmp_path / "cache")
    datasets.Dataset.from_dict({"image": images, "kind": ["dog", "cat", "dog"]},
                               features=datasets.Features({"image": datasets.Image(), "kind": datasets.Value("string")})
                               ).save_to_disk(str(tmp_path / "words"))
    words = read_hf_classification(tmp_path / "words", label_column="kind", cache_dir=tmp_path / "cache")
    assert words.classnames == ("cat", "dog") and words.images["label"].tolist() == [1, 0, 1]


def _tar(path, samples):
    with tarfile.open(path, "w") as archive:
        for name, content in samples:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_shards_with_a_class_column(tmp_path):
    rng = np.random.default_rng(3)
    for index in range(3):
        _noise_image(rng, 8).save(tmp_path / f"{index}.png")
    pd.DataFrame({"image": ["0.png", "1.png", "2.png"], "cls": ["dog", "cat", "dog"]}).to_parquet(
        tmp_path / "part-0.parquet")
    dataset = read_shard_classes(str(tmp_path / "part-0.parquet"), label_column="cls")
    assert dataset.classnames == ("cat", "dog") and dataset.images["label"].tolist() == [1, 0, 1]
    assert dataset.base_dir == str(tmp_path.resolve()) and dataset.images["uid"].tolist()[0] == "part-0/0"
    given = read_shard_classes(str(tmp_path / "part-0.parquet"), label_column="cls", classnames=["dog", "cat"])
    assert given.images["label"].tolist() == [0, 1, 0]
    png = (tmp_path / "0.png").read_bytes()
    _tar(tmp_path / "wds-0.tar", [("a.png", png), ("a.json", json.dumps({"label": 1}).encode()),
                                  ("b.png", png), ("b.json", json.dumps({"label": 0}).encode())])
    tars = read_shard_classes(str(tmp_path / "wds-0.tar"), classnames=["x", "y"])
    assert tars.images["label"].tolist() == [1, 0] and tars.images["image"].map(type).tolist() == [bytes, bytes]
    with pytest.raises(PairsTableError, match=re.escape("2 labels are not among the class names, e.g. 'dog'")):
        read_shard_classes(str(tmp_path / "part-0.parquet"), label_column="cls", classnames=["cat", "eel"])
    with pytest.raises(PairsTableError, match="no column"):
        read_shard_classes(str(tmp_path / "part-0.parquet"), label_column="missing")


def test_scenes_by_shape_and_colour_hold_only_scenes_where_the_truth_is_one_value(tmp_path):
    root = generate_scenes(tmp_path / "scenes", n_train=0, n_val=0, n_test=40, image_size=32)
    scenes = pd.read_csv(root / "scenes.csv", keep_default_na=False).set_index("scene_id")
    for attribute, names in (("shape", SHAPES), ("colour", tuple(COLOURS))):
        dataset = read_scene_classes(root, "test", attribute)
        assert dataset.classnames == names and 0 < len(dataset.images) < 40
        for row in dataset.images.itertuples():
            objects = scene_from_row({"scene_id": row.scene_id, **scenes.loc[row.scene_id].to_dict()}).objects
            assert {getattr(obj, attribute) for obj in objects} == {names[row.label]}
    with pytest.raises(PairsTableError, match="attribute must be one of shape, colour"):
        read_scene_classes(root, "test", "size")


# --- packaged class names and templates -----------------------------------------------------------------------

def test_packaged_lists_have_their_sizes_and_sources():
    sizes = {"imagenet1k": (1000, 80), "cifar10": (10, 18), "cifar100": (100, 18), "scenes-shape": (4, 24),
             "scenes-colour": (6, 16)}
    for name in PROMPT_FILES:
        prompts = packaged_prompts(name)
        assert (len(prompts.classnames), len(prompts.templates)) == sizes[name]
        for source in prompts.sources.values():  # a public list pinned to a commit or a package version
            assert source["repository"] == "this repository" or "commit" in source or "version" in source
    imagenet = packaged_prompts("imagenet1k")
    assert imagenet.classnames == open_clip_lists.IMAGENET_CLASSNAMES  # the installed package the source names
    assert [fill_template(t, "dog") for t in imagenet.templates] == [
        template("dog") for template in open_clip_lists.OPENAI_IMAGENET_TEMPLATES]
    folders = imagenet_folder_classnames()
    assert len(folders) == 1000 and folders["n01440764"] == "tench" and folders["n15075141"] == "toilet paper"
    cifar100 = [name.replace(" ", "_") for name in packaged_prompts("cifar100").classnames]
    assert cifar100 == sorted(cifar100)  # the dataset's fine labels are numbered in alphabetical order


def test_the_scenes_templates_are_the_scenes_caption_grammar():
    article = {colour: "an" if colour[0] in "aeiou" else "a" for colour in COLOURS}
    shape = packaged_prompts("scenes-shape")
    assert shape.classnames == SHAPES
    assert shape.templates == tuple(frame.format(f"{article[colour]} {colour} {{c}}") for frame in FRAMES
                                    for colour in COLOURS)
    colour = packaged_prompts("scenes-colour")
    assert colour.classnames == tuple(COLOURS)
    assert colour.templates == tuple(frame.format(f"two {{c}} {PLURALS[s]}") for frame in FRAMES for s in SHAPES)


def test_user_lists_are_read_from_text_or_json(tmp_path):
    (tmp_path / "names.txt").write_text("cat\n\n dog \n")
    (tmp_path / "names.json").write_text(json.dumps(["cat", "dog"]))
    assert read_classnames(tmp_path / "names.txt") == read_classnames(tmp_path / "names.json") == ("cat", "dog")
    (tmp_path / "templates.txt").write_text("a photo of a {}.\nart of the {c}.\n")
    assert [fill_template(t, "cat") for t in read_templates(tmp_path / "templates.txt")] == ["a photo of a cat.",
                                                                                           "art of the cat."]
    assert check_templates(["{{literal}} {c}"]) == ("{{literal}} {c}",)
    (tmp_path / "object.json").write_text(json.dumps({"a": "cat"}))
    with pytest.raises(PairsTableError, match="holds a JSON dict, not a list"):
        read_classnames(tmp_path / "object.json")
    with pytest.raises(PairsTableError, match="no such class names file"):
        read_classnames(tmp_path / "absent.txt")


# --- metrics --------------------------------------------------------------------------------------------------

def test_classification_metrics_against_scikit_learn():
    rng = np.random.default_rng(4)
    labels, predicted = rng.integers(0, 7, 300), rng.integers(0, 8, 300)
    labels[labels == 3] = 4  # a class without images: left out of the mean, as scikit-learn leaves it
    hits = labels == predicted
    with pytest.warns(UserWarning):  # scikit-learn: predicted classes absent from the labels
        expected = balanced_accuracy_score(labels, predicted)
    assert mean_per_group_rate(labels, hits) == pytest.approx(expected, abs=1e-12)
    interval = bootstrap_mean_per_group(labels, hits, n_resamples=200)
    assert interval.estimate == pytest.approx(expected, abs=1e-12) and interval.low < expected < interval.high
    names = [f"c{i}" for i in range(8)]
    table = per_class_table(labels, predicted, names)
    square = confusion_matrix(labels, predicted, labels=range(8))
    assert table["n_images"].tolist() == square.sum(axis=1).tolist()
    assert table["n_correct"].tolist() == np.diag(square).tolist() and np.isnan(table["recall"][3])
    cells = confusion_table(labels, predicted, names)
    assert cells["n_images"].sum() == 300 and (cells["n_images"] > 0).all()
    assert cells.pivot(index="label", columns="predicted", values="n_images").reindex(
        index=range(8), columns=range(8)).fillna(0).to_numpy(int).tolist() == square.tolist()
    assert 3 not in worst_classes(table, 8)["label"].tolist()
    assert (top_k_chance(1000, 5), top_k_chance(4, 5), top_k_chance(10, 1)) == (0.005, 1.0, 0.1)


# --- published numbers ----------------------------------------------------------------------------------------

# open_clip's docs/openclip_results.csv header at the recorded commit, spelled out apart from the copy
UPSTREAM_ZERO_SHOT_HEADER = (
    "name,pretrained,params (M),FLOPs (B),Average perf. on 38 datasets,ImageNet 1k,Caltech-101,CIFAR-10,CIFAR-100,"
    "CLEVR Counts,CLEVR Distance,Country211,Describable Textures,EuroSAT,FGVC Aircraft,Food-101,GTSRB,"
    "ImageNet Sketch,ImageNet v2,ImageNet-A,ImageNet-O,ImageNet-R,KITTI Vehicle Distance,MNIST,ObjectNet,"
    "Oxford Flowers-102,Oxford-IIIT Pet,Pascal VOC 2007,PatchCamelyon,Rendered SST2,RESISC45,Stanford Cars,STL-10,"
    "SUN397,SVHN,Flickr,MSCOCO,WinoGAViL,iWildCam,Camelyon17,FMoW,Dollar Street,GeoDE")
ZERO_SHOT_COLUMN = {"imagenet1k": 5, "cifar10": 7, "cifar100": 8}  # positions in that header


def test_the_published_zero_shot_table_names_its_source_and_keeps_its_header_and_averages():
    from clipeval.models.catalogue import OPEN_CLIP_ZERO_SHOT_RESULTS, read_published_table

    rows, origin = read_published_table(OPEN_CLIP_ZERO_SHOT_RESULTS)
    assert (origin["repository"], origin["file"]) == ("mlfoundations/open_clip", "docs/openclip_results.csv")
    assert re.fullmatch(r"[0-9a-f]{40}", origin["commit"]) and origin["commit"] in origin["url"]
    lines = OPEN_CLIP_ZERO_SHOT_RESULTS.read_text().splitlines()
    assert lines[0] == UPSTREAM_ZERO_SHOT_HEADER
    scores = UPSTREAM_ZERO_SHOT_HEADER.split(",")[5:]
    assert len(scores) == 38 and len(rows) == len(lines) - 1 == 7
    for name, row in rows.items():  # the average of 38 four-decimal scores, itself printed to four decimals
        mean = np.mean([float(row[column]) for column in scores])
        assert abs(mean - float(row["Average perf. on 38 datasets"])) <= 1e-4, name


def test_every_published_zero_shot_value_is_its_rows_cell():
    from clipeval.models.catalogue import OPEN_CLIP_ZERO_SHOT_RESULTS, published_retrieval, published_zero_shot

    cells = {line.split(",")[0] + "," + line.split(",")[1]: line.split(",")
             for line in OPEN_CLIP_ZERO_SHOT_RESULTS.read_text().splitlines()[1:]}
    published = published_zero_shot()
    assert set(published["checkpoint"]) == set(published_retrieval()["checkpoint"])  # every real checkpoint
    assert (published.groupby("checkpoint").size() == 3).all() and (published["metric"] == "top1_accuracy").all()
    for entry in published.itertuples():
        row = re.search(r", row ([^;,]+,[^;,]+?)(?:;|$)", entry.source).group(1)
        assert entry.published == pytest.approx(100 * float(cells[row][ZERO_SHOT_COLUMN[entry.dataset]]), abs=1e-9)
    assert published_zero_shot(["dual:outputs/offline/models/dual"]).empty
