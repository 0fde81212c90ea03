"""Dataset repositories of the mirror, at their real sizes, in the layouts their loaders read (docs/gpu-box.md).

The images are the captioned scenes' drawings (:mod:`clipeval.data.scenes`), each with its own true captions, so
a query has a right answer even though no model here knows it.
"""

from __future__ import annotations

import io
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
