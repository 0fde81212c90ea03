"""Standard retrieval benchmarks: COCO 2014 5k test and Flickr30k 1k test (Karpathy splits), and the Pokémon set.

The published zero-shot retrieval numbers of CLIP-family checkpoints (the CLIP paper, open_clip's
results table, CLIP_benchmark) are measured on Karpathy's test splits with every caption of an
image as a query: COCO 2014 5k test (5,000 images, 25,000 captions) and Flickr30k 1k test
(1,000 images, 5,000 captions), 5 captions per image. The Pokémon BLIP captions (833 images, one
BLIP caption each, :data:`POKEMON`) are the retrieval write-up's set: it counted text->image hits
in the top 5 over all 833 queries. Each benchmark is read into a
:class:`~clipeval.data.retrieval_sets.RetrievalSet` with one query per caption, relevant to its
own image only, so text->image HitRate@k asks whether the caption's image is in the top k and
image->text HitRate@k whether any of the image's 5 captions is (the standard protocol).

The data comes from where its users get it (:func:`load_benchmark`'s ``kind``):

- ``karpathy``: Karpathy's split file (``dataset_coco.json`` / ``dataset_flickr30k.json`` from
  ``caption_datasets.zip``): ``{"dataset": ..., "images": [{"filepath"?, "filename", "split",
  "sentences": [{"raw", "tokens"}], "imgid", "cocoid"?}]}``, with the images under a local folder
  (``<root>/<filepath>/<filename>``, or ``<root>/<filename>`` when there is no such subfolder) or,
  for COCO, by URL (``http://images.cocodataset.org/<filepath>/<filename>``, fetched and cached
  by :mod:`clipeval.data.fetch` when embedded). Only the requested split is read (``test``;
  ``restval``, ``train`` and ``val`` images are left out).
- ``wds``: CLIP_benchmark's webdataset copies (``clip-benchmark/wds_mscoco_captions``,
  ``clip-benchmark/wds_flickr30k`` on the Hugging Face hub): ``<root>/<split>/nshards.txt`` and
  ``<root>/<split>/0.tar ... <n-1>.tar``, each sample an image (``.webp``, ``.png``, ``.jpg``,
  ``.jpeg``) and a ``.txt`` holding its captions one per line; ``dataset_type.txt`` says
  ``retrieval``. A local folder, the split folder, one ``.tar``, or ``hf:owner/name`` (downloaded
  with ``huggingface_hub``, only the split's shards). Images are written once to
  ``<cache_dir>/wds/``, named by the SHA-256 of their bytes.
- ``hf``: a Hugging Face dataset (``save_to_disk`` folder, Parquet files or ``hf:owner/name``)
  with an image column, a caption column holding the image's list of captions (or one caption per
  row) and, optionally, a column with the Karpathy split (``nlphuji/flickr30k``'s layout).

Every source keeps the first ``captions_per_image`` (5) captions of each image, in file order (a
few COCO images have 6 or 7). :func:`load_benchmark` also checks the set's size against the
benchmark's (a wrong split or file is the common silent error: CLIP_benchmark #48 scored Flickr8k
on the wrong split) and stops with :class:`BenchmarkError` when it differs. ``max_images`` then
keeps only the first images of a checked set (a rehearsal or a smoke run: the set is read and
checked whole, the models see a part, and the numbers are not comparable with published ones).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.fetch import DEFAULT_CACHE_DIR
from clipeval.data.options import PairsTableError
from clipeval.data.retrieval_sets import RetrievalSet
from clipeval.data.shards import IMAGE_EXTENSIONS, iter_tar_samples
from clipeval.data.sources import error_reason, read_pairs, save_image_bytes
from clipeval.progress import progress_bar

COCO_5K = "coco-5k"
FLICKR_1K = "flickr30k-1k"
POKEMON = "pokemon-blip"
CAPTIONS_PER_IMAGE = 5
COCO_IMAGES_URL = "http://images.cocodataset.org"
KARPATHY_SPLITS_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"


class BenchmarkError(PairsTableError):
    """A benchmark source cannot be used (wrong file, shape or split); the message says how to fix it."""


@dataclass(frozen=True)
class Benchmark:
    """One standard retrieval benchmark.

    Attributes:
        name: its id: the ``dataset`` column of ``metrics.csv`` and the catalogue's key.
        title: what the tables call it (names the split and the captions per image).
        karpathy_dataset: the ``dataset`` field of its Karpathy split file (None: it has none).
        n_images: images in its test split.
        captions_per_image: captions kept per image (queries = images x this).
        hub_source: its usual source on the Hugging Face hub (a ``benchmarks`` entry of a profile).
        reference: what an earlier write-up reported on it, where no published table has it.
    """

    name: str
    title: str
    karpathy_dataset: str | None
    n_images: int
    captions_per_image: int
    hub_source: dict
    reference: str = ""

    @property
    def n_captions(self) -> int:
        return self.n_images * self.captions_per_image


# The Pokémon set's repository: lambdalabs/pokemon-blip-captions was taken down; copies remain.
POKEMON_REPO = "reach-vb/pokemon-blip-captions"

BENCHMARKS: dict[str, Benchmark] = {info.name: info for info in (
    Benchmark(COCO_5K, "COCO 2014 5k test (Karpathy split, 5 captions per image)", "coco", 5000,
              CAPTIONS_PER_IMAGE, {"kind": "wds", "path": "hf:clip-benchmark/wds_mscoco_captions"}),
    Benchmark(FLICKR_1K, "Flickr30k 1k test (Karpathy split, 5 captions per image)", "flickr30k", 1000,
              CAPTIONS_PER_IMAGE, {"kind": "wds", "path": "hf:clip-benchmark/wds_flickr30k"}),
    Benchmark(POKEMON, "Pokémon BLIP captions (833 images, one BLIP caption each)", None, 833, 1,
              {"kind": "hf", "path": f"hf:{POKEMON_REPO}", "hf_split": "train", "caption_column": "text",
               "captions_per_image": 1},
              reference="the retrieval write-up: the BERT + ResNet-50 baseline put the right image in the top 5 "
                        "for 6 of 833 captions (text->image HitRate@5 0.72%; chance is 5/833 = 0.60%)"),
)}

# The options each source kind takes (besides ``kind``); a misspelt one is an error, never ignored.
COMMON_OPTIONS: dict[str, object] = {"captions_per_image": CAPTIONS_PER_IMAGE, "check_size": True, "max_images": None}
SOURCE_OPTIONS: dict[str, dict[str, object]] = {
    "karpathy": {"path": None, "images": None, "split": "test", **COMMON_OPTIONS},
    "wds": {"path": None, "split": "test", **COMMON_OPTIONS},
    "hf": {"path": None, "split": "test", "hf_split": None, "image_column": "image", "caption_column": "caption",
           "split_column": "split", **COMMON_OPTIONS},
}


def captions_set(name: str, rows: pd.DataFrame, base_dir: str | None = None,
                 captions_per_image: int | None = CAPTIONS_PER_IMAGE) -> RetrievalSet:
    """One query per caption, relevant to its own image; the distinct images are the collection.

    Args:
        name: the set's name.
        rows: one row per caption, in file order: ``image`` (reference), ``caption`` and
            optionally ``image_id``, which tells the images apart (default: the reference). A row
            without an image reference cannot be placed and is left out (the benchmark's size
            check then fails).
        base_dir: folder relative image references are resolved against.
        captions_per_image: keep the first this many non-empty captions of each image (None: all).

    Returns:
        The set: queries ``text``, ``image_id``, ``caption_index`` (position among the image's
        kept captions); images ``image``, ``image_id``, ``n_captions`` (kept) and
        ``n_captions_left_out`` (empty, or beyond ``captions_per_image``). An image with no
        kept caption stays in the collection (an image->text query without a relevant caption).

    Raises:
        BenchmarkError: no row has an image, or none a non-empty caption.
    """
    rows = rows[rows["image"].notna()]
    rows = rows.assign(image=rows["image"].astype(str), caption=rows["caption"].astype("string").str.strip())
    if "image_id" not in rows:
        rows["image_id"] = rows["image"]
    # an image is its id (a sample key, a COCO id), not its file: two samples with the same bytes stay two images
    positions, ids = pd.factorize(rows["image_id"], sort=False)
    usable = (rows["caption"].notna() & rows["caption"].ne("")).to_numpy(dtype=bool)
    caption_index = rows[usable].groupby("image_id", sort=False).cumcount().to_numpy()
    keep = usable.copy()
    if captions_per_image is not None:
        keep[usable] = caption_index < captions_per_image
    if not keep.any():
        raise BenchmarkError(f"{name}: no image with a non-empty caption")
    kept = np.bincount(positions[keep], minlength=len(ids))
    images = pd.DataFrame({"image": rows.drop_duplicates("image_id")["image"].to_numpy(), "image_id": ids.to_numpy(),
                           "n_captions": kept, "n_captions_left_out": np.bincount(positions, minlength=len(ids))
                           - kept})
    queries = pd.DataFrame({"text": rows["caption"][keep].astype(str).to_numpy(),
                            "image_id": rows["image_id"][keep].to_numpy(),
                            "caption_index": caption_index[keep[usable]]})
    relevant = np.stack([np.arange(len(queries)), positions[keep]], axis=1).astype(np.int64)
    return RetrievalSet(name, queries, images, relevant, base_dir)


def read_karpathy(path: str | Path, name: str, images: str | Path | None, split: str = "test",
                  captions_per_image: int | None = CAPTIONS_PER_IMAGE,
                  expect_dataset: str | None = None) -> RetrievalSet:
    """Read one split of a Karpathy split file (``dataset_coco.json``, ``dataset_flickr30k.json``).

    Args:
        path: the split file.
        name: the set's name.
        images: ``url`` (COCO only: ``http://images.cocodataset.org/<filepath>/<filename>``) or
            the folder holding the images (``<folder>/<filepath>/<filename>`` where that
            subfolder exists, else ``<folder>/<filename>``).
        split: the split to read (``test``; the file also has ``train``, ``val`` and, for COCO,
            ``restval``).
        captions_per_image: keep the first this many captions of each image (None: all).
        expect_dataset: the file's ``dataset`` field must be this (``coco``, ``flickr30k``).

    Returns:
        The set; ``image_id`` is ``cocoid`` where present, else ``imgid``.

    Raises:
        BenchmarkError: no such file, not JSON, not a Karpathy split file, an entry without
            ``filename``/``split``/``sentences``, the wrong dataset, no image in ``split``,
            ``images`` missing, or ``url`` for images with no ``filepath``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as error:
        raise BenchmarkError(f"{path}: no such file; Karpathy's split files (dataset_coco.json, "
                             f"dataset_flickr30k.json) are in {KARPATHY_SPLITS_URL}") from error
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"{path}: cannot read the Karpathy split file ({error_reason(error)})") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BenchmarkError(f"{path}: not a Karpathy split file (needs a top-level object with 'images': a list of "
                             "{filename, split, sentences: [{raw, tokens}]}, as in dataset_coco.json)")
    found_dataset = data.get("dataset")
    if expect_dataset is not None and found_dataset is not None and found_dataset != expect_dataset:
        raise BenchmarkError(f"{path}: is the Karpathy file of {found_dataset!r}, not {expect_dataset!r}; "
                             f"use dataset_{expect_dataset}.json")
    if images is None or str(images).strip() == "":
        raise BenchmarkError(f"{path}: say where the images are: images: url (COCO) or the images folder")
    by_url = str(images).strip().lower() == "url"
    root = None if by_url else Path(images).expanduser()
    rows, splits = [], {}
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not {"filename", "split", "sentences"} <= entry.keys():
            lacking = sorted({"filename", "split", "sentences"} - set(entry)) if isinstance(entry, dict) else "all"
            raise BenchmarkError(f"{path}: image entry {index} lacks {lacking}; every entry needs filename, split "
                                 "and sentences")
        splits[entry["split"]] = splits.get(entry["split"], 0) + 1
        if entry["split"] != split:
            continue
        ref = _karpathy_image(entry, path, by_url, root)
        image_id = entry.get("cocoid", entry.get("imgid", entry["filename"]))
        sentences = entry["sentences"]
        if not isinstance(sentences, list):
            raise BenchmarkError(f"{path}: image entry {index} ({entry['filename']}): sentences is not a list")
        for sentence in sentences:
            rows.append({"image": ref, "caption": _sentence_text(sentence, path, entry), "image_id": image_id})
    if not rows:
        found = ", ".join(f"{key} ({count})" for key, count in sorted(splits.items())) or "none"
        raise BenchmarkError(f"{path}: no image in split {split!r}; splits found (images): {found}")
    base_dir = None if by_url else str(root.resolve())
    return captions_set(name, pd.DataFrame(rows, columns=["image", "caption", "image_id"]), base_dir,
                        captions_per_image)


def _karpathy_image(entry: dict, path: Path, by_url: bool, root: Path | None) -> str:
    """An entry's image reference: a URL, or a path relative to the images folder."""
    filepath, filename = entry.get("filepath"), entry["filename"]
    if by_url:
        if not filepath:
            raise BenchmarkError(f"{path}: images have no filepath (Flickr30k), so no public URL; set images to "
                                 "the folder that holds them (flickr30k-images)")
        return f"{COCO_IMAGES_URL}/{filepath}/{filename}"
    return f"{filepath}/{filename}" if filepath and (root / filepath).is_dir() else filename


def _sentence_text(sentence: object, path: Path, entry: dict) -> str:
    """A Karpathy sentence's caption: ``raw``, else its ``tokens`` joined."""
    if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
        return sentence["raw"]
    if isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
        return " ".join(map(str, sentence["tokens"]))
    raise BenchmarkError(f"{path}: a sentence of {entry['filename']} has neither raw nor tokens")


def read_wds(path: str | Path, name: str, split: str = "test", captions_per_image: int | None = CAPTIONS_PER_IMAGE,
             cache_dir: str | Path = DEFAULT_CACHE_DIR) -> RetrievalSet:
    """Read a CLIP_benchmark retrieval webdataset (``wds_mscoco_captions``, ``wds_flickr30k``).

    Args:
        path: the dataset folder (holding ``<split>/nshards.txt``), the split folder, one
            ``.tar`` shard, or ``hf:owner/name`` (the split's shards are downloaded from the hub).
        name: the set's name.
        split: the split folder to read.
        captions_per_image: keep the first this many captions of each image (None: all).
        cache_dir: the image cache root (images are written to ``<cache_dir>/wds/``).

    Returns:
        The set; ``image_id`` is the sample's key.

    Raises:
        BenchmarkError: no shards, a shard missing or unreadable, a non-retrieval dataset, or a
            sample without an image or captions.
    """
    root = _download_wds(str(path)[3:], split) if str(path).startswith("hf:") else Path(path).expanduser()
    rows = []
    for shard in _wds_shards(root, split):
        for key, sample in progress_bar(_wds_samples(shard), desc=f"{name}: {shard.name}", unit="image"):
            image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
            if image is None or "txt" not in sample:
                raise BenchmarkError(f"{shard}: sample {key} has {sorted(sample) or 'no files'}; a retrieval sample "
                                     f"needs an image ({', '.join(IMAGE_EXTENSIONS)}) and a .txt of captions")
            ref = save_image_bytes(image, cache_dir, "wds")
            captions = sample["txt"].decode("utf-8", errors="replace").splitlines()
            rows += [{"image": ref, "caption": caption, "image_id": key} for caption in captions]
    if not rows:
        raise BenchmarkError(f"{root}: the shards hold no sample")
    return captions_set(name, pd.DataFrame(rows, columns=["image", "caption", "image_id"]), None, captions_per_image)


def _download_wds(repo: str, split: str) -> Path:
    """The split's shards of a hub webdataset, downloaded (or found in the hub cache)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, repo_type="dataset", allow_patterns=[f"{split}/*", "dataset_type.txt"]))
    except Exception as error:
        raise BenchmarkError(
            f"cannot download the webdataset {repo} from the Hugging Face hub ({error_reason(error)}); where there is "
            f"network run: hf download {repo} --repo-type dataset --include '{split}/*' dataset_type.txt "
            f"--local-dir <folder>, and set path to that folder") from error


def _wds_shards(root: Path, split: str) -> list[Path]:
    """The ``.tar`` shards of a webdataset split, in order."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise BenchmarkError(f"{root}: no such folder or .tar file (a CLIP_benchmark webdataset: "
                             f"<folder>/{split}/nshards.txt and 0.tar, 1.tar...)")
    # dataset_type.txt sits beside the split folders: in root, or above it when root is the split folder
    candidates = (root, root.parent) if (root / "nshards.txt").is_file() else (root,)
    dataset_type = next((folder / "dataset_type.txt" for folder in candidates
                         if (folder / "dataset_type.txt").is_file()), None)
    if dataset_type is not None and dataset_type.read_text().strip().lower() != "retrieval":
        raise BenchmarkError(f"{dataset_type}: says {dataset_type.read_text().strip()!r}; a retrieval benchmark "
                             "needs a retrieval webdataset (image + .txt captions)")
    folder = root / split if (root / split).is_dir() else root
    if (folder / "nshards.txt").is_file():
        text = (folder / "nshards.txt").read_text().strip()
        if not text.isdigit():
            raise BenchmarkError(f"{folder / 'nshards.txt'}: holds {text[:40]!r}, not a number of shards")
        shards = [folder / f"{index}.tar" for index in range(int(text))]
        missing = [shard for shard in shards if not shard.is_file()]
        if missing:
            raise BenchmarkError(f"{folder}: nshards.txt says {len(shards)} shards but {len(missing)} are missing "
                                 f"(e.g. {missing[0].name}); download the whole split")
        return shards
    # no nshards.txt: every .tar of the folder, numbered shards in numeric order (2.tar before 10.tar)
    shards = sorted(folder.glob("*.tar"), key=lambda file: (int(file.stem) if file.stem.isdigit() else 1 << 62,
                                                            file.name))
    if not shards:
        splits = sorted(child.name for child in root.iterdir() if (child / "nshards.txt").is_file())
        found = f"; splits found: {', '.join(splits)}" if splits else ""
        raise BenchmarkError(f"{folder}: no nshards.txt and no .tar shards (a CLIP_benchmark webdataset: "
                             f"<folder>/{split}/nshards.txt and 0.tar, 1.tar...){found}")
    return shards


def _wds_samples(shard: Path):
    """:func:`~clipeval.data.shards.iter_tar_samples`, a read failure as a :class:`BenchmarkError`."""
    try:
        yield from iter_tar_samples(shard)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BenchmarkError(f"{shard}: cannot read the shard ({error_reason(error)}); download it "
                             "again") from error


def read_hf_captions(path: str, name: str, split: str = "test", hf_split: str | None = None,
                     image_column: str = "image", caption_column: str = "caption", split_column: str | None = "split",
                     captions_per_image: int | None = CAPTIONS_PER_IMAGE,
                     cache_dir: str | Path = DEFAULT_CACHE_DIR) -> RetrievalSet:
    """Read a captions dataset in a Hugging Face format (``save_to_disk``, Parquet, ``hf:owner/name``).

    Args:
        path: the dataset (see :func:`clipeval.data.sources.read_pairs`, kind ``hf``).
        name: the set's name.
        split: the Karpathy split kept, when ``split_column`` is a column.
        hf_split: the dataset's own split to load, when it has several.
        image_column: stored images (written to ``<cache_dir>/hf/``) or paths/URLs.
        caption_column: the image's captions: a list, or one caption per row.
        split_column: the column holding each row's Karpathy split; when the dataset has no such
            column every row is read (the dataset is then taken to be the split itself).
        captions_per_image: keep the first this many captions of each image (None: all).
        cache_dir: the image cache root.

    Raises:
        BenchmarkError: ``split_column`` holds no row of ``split``.
        PairsTableError: the dataset cannot be read, or lacks a column.
    """
    table = read_pairs(path, image_column, caption_column, kind="hf", split=hf_split, cache_dir=cache_dir)
    if split_column and split_column in table:
        values = table[split_column].astype(str)
        if not values.eq(split).any():
            found = ", ".join(sorted(values.unique())[:10])
            raise BenchmarkError(f"{path}: no row with {split_column} = {split!r}; found {found}")
        table = table[values.eq(split)]
    rows = pd.DataFrame({"image": table[image_column].to_numpy(), "caption": table[caption_column].to_numpy(),
                         "image_id": _hf_image_ids(table, image_column)})
    return captions_set(name, rows, table.attrs.get("base_dir"), captions_per_image)


def _hf_image_ids(table: pd.DataFrame, image_column: str) -> np.ndarray:
    """What tells a dataset's images apart: its id column; else its rows, when each held a list of
    captions (read one per row, ``caption_index`` 0 starting each); else the image reference."""
    id_column = next((column for column in ("img_id", "image_id", "cocoid", "filename") if column in table), None)
    if id_column is not None:
        return table[id_column].to_numpy()
    if "caption_index" in table:
        return np.cumsum(table["caption_index"].to_numpy() == 0)
    return table[image_column].to_numpy()


def benchmark_options(name: str, source: Mapping) -> dict:
    """A source's options with their defaults filled in; ``kind`` first.

    Raises:
        BenchmarkError: an unknown benchmark or kind, an unknown or missing option.
    """
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if not isinstance(source, Mapping):
        raise BenchmarkError(f"{name}: its source must be a mapping with kind and path, not {source!r}")
    kind = source.get("kind")
    if kind not in SOURCE_OPTIONS:
        raise BenchmarkError(f"{name}: kind {kind!r}; use one of {', '.join(SOURCE_OPTIONS)}")
    defaults = SOURCE_OPTIONS[kind]
    unknown = sorted(set(source) - set(defaults) - {"kind"})
    if unknown:
        raise BenchmarkError(f"{name}: unknown option(s) {unknown} for kind {kind}; it takes {', '.join(defaults)}")
    options = {"kind": kind, **defaults, **{key: value for key, value in source.items() if key != "kind"}}
    missing = [key for key in ("path", "images") if key in defaults and options[key] in (None, "")]
    if missing:
        raise BenchmarkError(f"{name}: kind {kind} needs {', '.join(missing)}")
    return options


def load_benchmark(name: str, source: Mapping, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> RetrievalSet:
    """Read a benchmark from its source and check that it is the benchmark's test split.

    Args:
        name: a key of :data:`BENCHMARKS` (``coco-5k``, ``flickr30k-1k``, ``pokemon-blip``).
        source: ``kind`` (``karpathy``, ``wds`` or ``hf``) and that kind's options
            (:data:`SOURCE_OPTIONS`); ``check_size: false`` evaluates a set of another size and
            ``max_images: N`` the first N images of the checked set (the numbers of either are
            then not comparable with the published ones).
        cache_dir: the image cache root (URL downloads, images stored in datasets).

    Returns:
        The :class:`RetrievalSet`, named ``name``.

    Raises:
        BenchmarkError: a bad source (see the readers), a set whose images or captions differ
            in number from the benchmark's, or a ``max_images`` below 1.
    """
    options = benchmark_options(name, source)
    info = BENCHMARKS[name]
    kind, per_image = options["kind"], options["captions_per_image"]
    if kind == "karpathy":
        dataset = read_karpathy(options["path"], name, options["images"], options["split"], per_image,
                                expect_dataset=info.karpathy_dataset)
    elif kind == "wds":
        dataset = read_wds(options["path"], name, options["split"], per_image, cache_dir)
    else:
        dataset = read_hf_captions(options["path"], name, options["split"], options["hf_split"],
                                   options["image_column"], options["caption_column"], options["split_column"],
                                   per_image, cache_dir)
    if options["check_size"]:
        problem = size_problem(dataset, info)
        if problem:
            raise BenchmarkError(f"{name} from {options['path']}: {problem}; a different split or file? "
                                 "(check_size: false evaluates it anyway, not comparable with published numbers)")
    if options["max_images"] is not None:
        dataset = first_images(dataset, options["max_images"])
    return dataset


def first_images(dataset: RetrievalSet, n: int) -> RetrievalSet:
    """The set cut to its first ``n`` images and the queries relevant to them.

    Raises:
        BenchmarkError: ``n`` is not a whole number >= 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BenchmarkError(f"{dataset.name}: max_images must be a whole number >= 1, not {n!r}")
    if n >= len(dataset.images):
        return dataset
    keep = dataset.relevant[:, 1] < n
    queries = np.unique(dataset.relevant[keep, 0])
    position = np.full(len(dataset.queries), -1, dtype=np.int64)
    position[queries] = np.arange(len(queries))
    relevant = np.stack([position[dataset.relevant[keep, 0]], dataset.relevant[keep, 1]], axis=1)
    return RetrievalSet(dataset.name, dataset.queries.iloc[queries].reset_index(drop=True),
                        dataset.images.iloc[:n].reset_index(drop=True), relevant, dataset.base_dir)


def size_problem(dataset: RetrievalSet, info: Benchmark) -> str | None:
    """What differs between a set's size and the benchmark's, or None."""
    n_images, n_captions = len(dataset.images), len(dataset.queries)
    if n_images == info.n_images and n_captions == info.n_captions:
        return None
    return (f"{n_images:,} images and {n_captions:,} captions, where the {info.title} has "
            f"{info.n_images:,} and {info.n_captions:,}")


def describe_benchmark(dataset: RetrievalSet) -> dict:
    """One row on a loaded benchmark: its title, images, captions (kept, per image, left out), expected sizes."""
    info = BENCHMARKS.get(dataset.name)
    per_image = dataset.images["n_captions"] if "n_captions" in dataset.images else pd.Series(dtype=int)
    left_out = dataset.images["n_captions_left_out"] if "n_captions_left_out" in dataset.images else per_image * 0
    return {"benchmark": dataset.name, "title": info.title if info else dataset.name,
            "images": len(dataset.images), "captions": len(dataset.queries),
            "captions_per_image": _range_text(per_image), "captions_left_out": int(left_out.sum()),
            "expected_images": info.n_images if info else None, "expected_captions": info.n_captions if info else None,
            "image_source": _image_source(dataset)}


def _range_text(values: pd.Series) -> str:
    if values.empty:
        return ""
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low}-{high}"


def _image_source(dataset: RetrievalSet) -> str:
    first = str(dataset.images["image"].iloc[0]) if len(dataset.images) else ""
    if re.match(r"^https?://", first):
        return "URL (fetched and cached)"
    return dataset.base_dir or str(Path(first).parent.parent)
