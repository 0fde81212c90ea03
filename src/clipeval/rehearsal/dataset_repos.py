"""Dataset repositories of the mirror in the layouts their loaders read (docs/gpu-box.md): the retrieval benchmarks
at their real sizes (their size checks are part of what is rehearsed), the classification sets and SugarCrepe small.

The images are the captioned scenes' drawings (:mod:`clipeval.data.scenes`), each with its own true captions, so
a query has a right answer even though no model here knows it.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clipeval.data.scenes import caption_scene, draw_scene, sample_scene

IMAGE_SIDE = 64
SHARD_SIZE = 1000


def scene_samples(n: int, captions: int, seed: int) -> Iterator[tuple[bytes, list[str]]]:
    """``n`` scene drawings as JPEG bytes, each with ``captions`` true captions (repeated when it has fewer)."""
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        scene = sample_scene(f"mirror-{index:05d}", "test", rng)
        texts = [row["caption"] for row in caption_scene(scene, rng, captions) if row["match"]]
        image = draw_scene(scene, IMAGE_SIDE, sign_x=int(rng.integers(1, 30)))
        # the index in the last row's pixels, so that no two images are alike (as in a real benchmark)
        for bit in range(16):
            image.putpixel((bit, IMAGE_SIDE - 1), (255, 255, 255) if index >> bit & 1 else (0, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        yield buffer.getvalue(), [texts[position % len(texts)] for position in range(captions)]


def _add(archive: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    archive.addfile(info, io.BytesIO(content))


def wds_retrieval(folder: Path, n_images: int, captions: int = 5, split: str = "test", seed: int = 0) -> None:
    """A CLIP_benchmark retrieval webdataset: ``n_images`` samples of an image and ``captions`` captions."""
    split_folder = folder / split
    split_folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_type.txt").write_text("retrieval\n")
    n_shards = max(1, -(-n_images // SHARD_SIZE))
    samples = scene_samples(n_images, captions, seed)
    for shard in range(n_shards):
        with tarfile.open(split_folder / f"{shard}.tar", "w") as archive:
            for index in range(shard * SHARD_SIZE, min(n_images, (shard + 1) * SHARD_SIZE)):
                image, texts = next(samples)
                _add(archive, f"s{index:07d}.jpg", image)
                _add(archive, f"s{index:07d}.txt", "\n".join(texts).encode())
    (split_folder / "nshards.txt").write_text(f"{n_shards}\n")


POKEMON_CARD = """---
license: cc-by-nc-sa-4.0
dataset_info:
  features:
  - name: image
    dtype: image
  - name: text
    dtype: string
  splits:
  - name: train
    num_bytes: {size}
    num_examples: {rows}
  download_size: {size}
  dataset_size: {size}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# Pokémon BLIP captions (rehearsal mirror)

Random stand-in for the real dataset: {rows} synthetic images, each with one caption.
"""


def pokemon_captions(folder: Path, n_rows: int = 833, seed: int = 1) -> None:
    """The Pokémon BLIP captions layout: ``data/train-00000-of-00001.parquet`` (image, text) and its card, written
    by ``datasets`` so that its schema carries the ``Image`` feature as the hub's files do."""
    import datasets

    images, texts = [], []
    for index, (image, captions) in enumerate(scene_samples(n_rows, 1, seed)):
        images.append({"bytes": image, "path": f"{index:04d}.jpg"})
        texts.append(captions[0])
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    parquet = folder / "data" / "train-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"image": images, "text": texts}, features=features).to_parquet(str(parquet))
    (folder / "README.md").write_text(POKEMON_CARD.format(rows=n_rows, size=parquet.stat().st_size))


def _card(config: str, features: dict[str, object], splits: dict[str, int], sizes: dict[str, int]) -> str:
    """A dataset card whose ``dataset_info`` declares the features and splits and whose ``configs`` map each split
    to its Parquet files, as the hub's converted datasets have (docs/gpu-box.md)."""
    import yaml

    info = {"config_name": config, "features": [{"name": name, "dtype": dtype} for name, dtype in features.items()],
            "splits": [{"name": split, "num_bytes": sizes[split], "num_examples": rows}
                       for split, rows in splits.items()],
            "download_size": sum(sizes.values()), "dataset_size": sum(sizes.values())}
    configs = [{"config_name": config, "data_files": [{"split": split, "path": f"{_folder_of(config)}/{split}-*"}
                                                      for split in splits], "default": True}]
    header = yaml.safe_dump({"dataset_info": info, "configs": configs}, sort_keys=False, allow_unicode=True)
    return (f"---\n{header}---\n# Rehearsal mirror stand-in\n\nRandom stand-in for the real dataset: synthetic "
            "images (the scenes' drawings) under the real columns, label names and splits, with labels in turn.\n")


def _folder_of(config: str) -> str:
    """The folder a config's Parquet files live in: ``data/`` for the default config, else the config's name."""
    return "data" if config == "default" else config


def _class_label(names: tuple[str, ...]) -> dict:
    return {"class_label": {"names": {str(position): name for position, name in enumerate(names)}}}


def classification_repo(folder: Path, config: str, image_column: str, labels: dict[str, tuple[str, ...]],
                        splits: dict[str, int], image_side: int | None = None, unlabelled: tuple[str, ...] = (),
                        seed: int = 2) -> None:
    """A Hugging Face image-classification dataset as the hub's Parquet conversion lays it out: per split one
    ``<config folder>/<split>-00000-of-00001.parquet``, written by ``datasets`` so its schema carries the ``Image``
    and ``ClassLabel`` features, and a card declaring them.

    Args:
        labels: each label column and its class names (the first is the class; the others get labels in turn).
        splits: each split and its rows.
        image_side: resize to this square side and store PNG (CIFAR's 32 px); default the drawings' JPEG.
        unlabelled: splits whose labels are -1 (ImageNet's test split has none published).
    """
    import datasets
    from PIL import Image

    features = datasets.Features({image_column: datasets.Image(), **{
        column: datasets.ClassLabel(names=list(names)) for column, names in labels.items()}})
    sizes = {}
    for number, (split, rows) in enumerate(splits.items()):
        images = []
        for image, _ in scene_samples(rows, 1, seed + number):
            if image_side is not None:
                buffer = io.BytesIO()
                Image.open(io.BytesIO(image)).convert("RGB").resize((image_side, image_side)).save(buffer, "PNG")
                image = buffer.getvalue()
            images.append({"bytes": image, "path": None})
        columns = {column: [-1 if split in unlabelled else index % len(names) for index in range(rows)]
                   for column, names in labels.items()}
        parquet = folder / _folder_of(config) / f"{split}-00000-of-00001.parquet"
        parquet.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict({image_column: images, **columns}, features=features).to_parquet(str(parquet))
        sizes[split] = parquet.stat().st_size
    card_features = {image_column: "image", **{column: _class_label(names) for column, names in labels.items()}}
    (folder / "README.md").write_text(_card(config, card_features, splits, sizes))


def imagenet_classes(folder: Path, rows: int = 1000) -> None:
    """``ILSVRC/imagenet-1k``: ``image`` and ``label`` (1,000 classes, named by their WordNet ids: the card's own
    names are not kept here, and ``ClassLabel`` refuses the cleaned list's repeated names); ``rows`` validation
    images, a tenth of that in train and in test (unlabelled, as the real test split)."""
    from clipeval.data.zero_shot_prompts import IMAGENET_WNIDS_FILE, ZERO_SHOT_DIR, read_classnames

    other = max(1, rows // 10)
    classification_repo(folder, "default", "image", {"label": read_classnames(ZERO_SHOT_DIR / IMAGENET_WNIDS_FILE)},
                        {"train": other, "validation": rows, "test": other}, unlabelled=("test",))


def cifar_classes(folder: Path, classes: int, rows: int = 1000) -> None:
    """``uoft-cs/cifar10`` (config ``plain_text``: ``img``, ``label``) or ``uoft-cs/cifar100`` (config ``cifar100``:
    ``img``, ``fine_label``, ``coarse_label``), 32 px PNGs; ``rows`` test images and a tenth of that in train. The
    names are the packaged ones as the cards spell them (CIFAR-100's with underscores: ``aquarium_fish``)."""
    from clipeval.data.zero_shot_prompts import packaged_prompts

    names = tuple(name.replace(" ", "_") for name in packaged_prompts(f"cifar{classes}").classnames)
    labels = {"label": names} if classes == 10 else {"fine_label": names, "coarse_label": CIFAR100_SUPERCLASSES}
    classification_repo(folder, "plain_text" if classes == 10 else "cifar100", "img", labels,
                        {"train": max(1, rows // 10), "test": rows}, image_side=32)


# CIFAR-100's 20 superclasses in label order (the dataset's meta file, coarse_label_names)
CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")


def sugarcrepe_folders(out: Path, items_per_category: int = 50, seed: int = 3) -> None:
    """SugarCrepe's ``data/`` folder (its seven JSON files: ``{id: {filename, caption, negative_caption}}``) in
    ``out/sugarcrepe/data`` and the COCO val2017 images they name (``000000000001.jpg``...) in ``out/coco/val2017``.

    Each item is one drawing with one of its true captions and a hard negative of it (a colour, count or relation
    changed), whatever the category's file: the stand-in has the files and formats, not the categories' edits.
    """
    from clipeval.data.sugarcrepe import SUGARCREPE_CATEGORIES

    data, images = out / "sugarcrepe" / "data", out / "coco" / "val2017"
    data.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    index = 0
    for stem in SUGARCREPE_CATEGORIES:
        items = {}
        while len(items) < items_per_category:
            rng = np.random.default_rng([seed, index])
            scene = sample_scene(f"sugarcrepe-{index:05d}", "test", rng)
            rows = caption_scene(scene, rng, 2)
            negative = next((row for row in rows if not row["match"]), None)
            if negative is not None:
                filename = f"{index + 1:012d}.jpg"
                draw_scene(scene, IMAGE_SIDE).save(images / filename, format="JPEG", quality=90)
                items[str(len(items))] = {"filename": filename, "caption": negative["twin_caption"],
                                          "negative_caption": negative["caption"]}
            index += 1
        (data / f"{stem}.json").write_text(json.dumps(items, indent=1) + "\n")
