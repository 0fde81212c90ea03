"""Classification sets: images with one true class each, and the names of the classes.

A :class:`ClassificationSet` is what zero-shot classification evaluates
(:mod:`clipeval.eval.zero_shot_classification`). Readers:

- :func:`read_image_folder_classes`: one subfolder per class (ImageNet's val layout). Classes are the
  subfolder names sorted as torchvision's ``ImageFolder`` sorts them (plain string order), except that hidden
  folders (``.ipynb_checkpoints``) are not classes; each folder's images are searched recursively. Folder
  names may be mapped to readable names (:func:`clipeval.data.zero_shot_prompts.imagenet_folder_classnames`).
- :func:`read_hf_classification`: a Hugging Face image-classification dataset (a ``save_to_disk`` folder, its
  Parquet files, or ``hf:owner/name``), read by the pairs reader (:func:`clipeval.data.sources.read_pairs`:
  stored images are written once to the image cache); the class names come from the label column's
  ``ClassLabel`` feature.
- :func:`read_shard_classes`: shards (:func:`clipeval.data.shards.read_shard`: parquet, CSV/TSV, webdataset
  tars) with a class column; in a tar the class is a field of each sample's ``json``.
- :func:`read_scene_classes`: the synthetic scenes by shape or by colour, where the truth is known.

Image references stay relative to ``base_dir`` (the folder, the shard's folder), so reading confines them
there as it does for every pairs table (``outside_root``). A set that cannot be evaluated raises
:class:`~clipeval.data.options.PairsTableError` with one line: no class folder, an empty class, a label
outside the class names, a label column that is missing or not whole numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipeval.data.fetch import DEFAULT_CACHE_DIR
from clipeval.data.options import PairsTableError, ShardLimits
from clipeval.data.scenes import COLOURS, SHAPES, scene_from_row
from clipeval.data.shards import ShardReadError, list_shards, read_shard
from clipeval.data.sources import image_files, read_pairs
from clipeval.data.zero_shot_prompts import read_folder_classnames
from clipeval.paths import where

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"
SCENE_ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS)}


@dataclass(frozen=True, eq=False)
class ClassificationSet:
    """Images, each with one true class, and the class names.

    Attributes:
        name: the set's name (the ``dataset`` column of the metrics).
        images: one row per image: ``image`` (a path relative to ``base_dir``, an absolute path, a URL or
            the image's bytes), ``label`` (int64, the class's position in ``classnames``) and whatever
            columns the source has (``class_folder``, ``uid``...).
        classnames: the class names, in label order (names may repeat; the label is the class).
        source: where the set was read from (the path or ``hf:`` name and how it was read).
        base_dir: the folder relative image paths are resolved against (and confined to).
    """

    name: str
    images: pd.DataFrame
    classnames: tuple[str, ...]
    source: str
    base_dir: str | None = None

    def __post_init__(self) -> None:
        check_classification_set(self)


def check_classification_set(dataset: ClassificationSet) -> None:
    """Raise :class:`PairsTableError` when the set cannot be evaluated: no class names, no images, no ``image``
    column, or labels that are not whole numbers in ``[0, len(classnames))``."""
    if not dataset.classnames:
        raise PairsTableError(f"{dataset.source}: no class names")
    if not all(isinstance(name, str) and name for name in dataset.classnames):
        raise PairsTableError(f"{dataset.source}: class names must be non-empty text")
    if IMAGE_COLUMN not in dataset.images or LABEL_COLUMN not in dataset.images:
        raise PairsTableError(f"{dataset.source}: the images table needs columns {IMAGE_COLUMN!r} and "
                              f"{LABEL_COLUMN!r}; it has {list(dataset.images.columns)[:20]}")
    if not len(dataset.images):
        raise PairsTableError(f"{dataset.source}: no images")
    labels = dataset.images[LABEL_COLUMN]
    if labels.dtype != np.int64:
        raise PairsTableError(f"{dataset.source}: labels must be int64 class positions, not {labels.dtype}")
    outside = labels[(labels < 0) | (labels >= len(dataset.classnames))]
    if len(outside):
        raise PairsTableError(f"{dataset.source}: {len(outside)} labels are outside the {len(dataset.classnames)} "
                              f"class names (0..{len(dataset.classnames) - 1}), e.g. {int(outside.iloc[0])} in row "
                              f"{outside.index[0]}; give the class names that go with these labels")


def class_counts(dataset: ClassificationSet) -> pd.Series:
    """Images per class, for every class (0 where a class has none), indexed by label."""
    counts = np.bincount(dataset.images[LABEL_COLUMN].to_numpy(), minlength=len(dataset.classnames))
    return pd.Series(counts, index=pd.RangeIndex(len(dataset.classnames), name=LABEL_COLUMN), name="n_images")


def class_folders(root: Path) -> list[str]:
    """The class subfolders of ``root`` sorted as torchvision's ``ImageFolder`` sorts (hidden ones not)."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def read_image_folder_classes(root: str | Path, classnames: Mapping[str, str] | Sequence[str] | str | Path | None
                              = None, name: str | None = None) -> ClassificationSet:
    """Read a folder with one subfolder of images per class (ImageNet's val layout).

    Args:
        root: the folder.
        classnames: the classes' readable names: a mapping ``{folder: name}`` (e.g.
            :func:`~clipeval.data.zero_shot_prompts.imagenet_folder_classnames`), a file of one
            (:func:`~clipeval.data.zero_shot_prompts.read_folder_classnames`), or a list in label order.
            Default: the folder names.
        name: the set's name (default: the folder's name).

    Returns:
        The set; ``images`` has ``image`` (relative to ``root``), ``label`` and ``class_folder``.

    Raises:
        PairsTableError: no such folder, no class subfolder, a class folder with no image, or class
            names that do not cover the folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise PairsTableError(f"{root}: no such folder {where(root)}")
    folders = class_folders(root)
    if not folders:
        raise PairsTableError(f"{root}: no class subfolders; an image-folder set has one folder of images per class "
                              "(ImageNet's val layout: val/n01440764/*.JPEG)")
    rows, empty = [], []
    for label, folder in enumerate(folders):
        files = image_files(root / folder)
        empty += [] if files else [folder]
        rows += [{IMAGE_COLUMN: file.relative_to(root).as_posix(), LABEL_COLUMN: label, "class_folder": folder}
                 for file in files]
    if empty:
        raise PairsTableError(f"{root}: {len(empty)} class folder(s) hold no image file, e.g. {empty[0]!r}; an "
                              "empty class has no accuracy (remove the folder, or finish extracting the dataset)")
    names = _folder_classnames(folders, classnames, root)
    images = pd.DataFrame(rows).astype({LABEL_COLUMN: np.int64})
    return ClassificationSet(name or root.resolve().name, images, names, f"{root} (image folders)",
                             str(root.resolve()))


def _folder_classnames(folders: list[str], classnames, root: Path) -> tuple[str, ...]:
    if classnames is None:
        return tuple(folders)
    if isinstance(classnames, (str, Path)):
        classnames = read_folder_classnames(classnames)
    if isinstance(classnames, Mapping):
        unnamed = [folder for folder in folders if folder not in classnames]
        if unnamed:
            raise PairsTableError(f"{root}: {len(unnamed)} class folder(s) have no name in the class names, e.g. "
                                  f"{unnamed[0]!r}")
        return tuple(classnames[folder] for folder in folders)
    if len(classnames) != len(folders):
        raise PairsTableError(f"{root}: {len(folders)} class folders but {len(classnames)} class names")
    return tuple(classnames)


def read_hf_classification(source: str | Path, image_column: str = "image", label_column: str = "label",
                           split: str | None = None, classnames: Sequence[str] | None = None,
                           cache_dir: str | Path = DEFAULT_CACHE_DIR, name: str | None = None) -> ClassificationSet:
    """Read a Hugging Face image-classification dataset (``save_to_disk`` folder, Parquet files or ``hf:owner/name``).

    The class names are the label column's ``ClassLabel`` names; a label column of strings gives
    classes in sorted order (``classnames`` overrides both, in label order).

    Args:
        source: the dataset, as :func:`clipeval.data.sources.read_pairs` takes it.
        image_column, label_column: the dataset's columns.
        split: the split, for a dataset with several.
        classnames: the class names in label order, when the dataset has none.
        cache_dir: the image cache root, where the dataset's stored images are written.
        name: the set's name (default: the dataset's name).

    Raises:
        PairsTableError: unreadable dataset, a missing column, no class names, or a label outside them.
    """
    table = read_pairs(source, image_column=image_column, caption_column=label_column, kind="hf", split=split,
                       cache_dir=cache_dir)
    names = (tuple(classnames) if classnames is not None
             else _class_label_names(str(source), split, label_column, cache_dir))
    labels, names = _labels(table[label_column], names, str(source))
    images = table.drop(columns=[label_column]).rename(columns={image_column: IMAGE_COLUMN})
    images.insert(1, LABEL_COLUMN, labels)
    dataset_name = name or Path(str(source).removeprefix("hf:")).name
    return ClassificationSet(dataset_name, images, names, f"{source} (Hugging Face dataset)", table.attrs["base_dir"])


def _class_label_names(source: str, split: str | None, label_column: str, cache_dir: str | Path
                       ) -> tuple[str, ...] | None:
    """The ``ClassLabel`` names of a dataset's label column, or None when it has none.

    The dataset is opened again as :func:`clipeval.data.sources.load_hf_dataset` opens it, which costs little
    after that first read: a ``save_to_disk`` folder is memory-mapped, Parquet data and hub snapshots come
    from the Arrow cache it filled.
    """
    import datasets  # heavy: only for this source

    from clipeval.data.sources import _hub_dataset_snapshot, _parquet_files, _pick_split

    name = source.removeprefix("hf:")
    local = Path(name)
    from_hub = source.startswith("hf:") and not local.exists()
    if from_hub:
        local = _hub_dataset_snapshot(name)
    if from_hub or _parquet_files(local):
        loaded = datasets.load_dataset(str(local) if local.is_dir() else "parquet",
                                       data_files=None if local.is_dir() else str(local),
                                       split=None if local.is_dir() else "train",
                                       cache_dir=str(Path(cache_dir) / "hf-datasets"))
    else:
        loaded = datasets.load_from_disk(str(local))
    feature = _pick_split(loaded, split, name).features.get(label_column)
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _labels(values: pd.Series, classnames: tuple[str, ...] | None, origin: str) -> tuple[np.ndarray, tuple]:
    """Labels as int64 positions in the class names; string labels are looked up in them (or define them, sorted)."""
    if values.isna().any():
        raise PairsTableError(f"{origin}: {int(values.isna().sum())} rows have no label")
    if pd.api.types.is_integer_dtype(values):
        if classnames is None:
            raise PairsTableError(f"{origin}: the labels are numbers but the data names no classes; give the class "
                                  "names in label order")
        return values.to_numpy(np.int64), classnames
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        return _labels(values.astype(np.int64), classnames, origin)
    texts = values.astype(str)
    names = classnames if classnames is not None else tuple(sorted(texts.unique()))
    positions = pd.Index(names).get_indexer(texts) if pd.Index(names).is_unique else None
    if positions is None:
        raise PairsTableError(f"{origin}: the class names repeat, so text labels cannot be looked up in them")
    if (positions < 0).any():
        unknown = texts[positions < 0].iloc[0]
        raise PairsTableError(f"{origin}: {int((positions < 0).sum())} labels are not among the class names, e.g. "
                              f"{unknown!r}")
    return positions.astype(np.int64), names


def read_shard_classes(shards: str | list[str], label_column: str = "label", image_column: str = "image",
                       classnames: Sequence[str] | None = None, limits: ShardLimits = ShardLimits(),
                       max_member_bytes: int | None = None, name: str | None = None) -> ClassificationSet:
    """Read shards with a class column: parquet, CSV/TSV or webdataset tars whose samples' ``json`` has the class.

    Each shard is read whole by :func:`clipeval.data.shards.read_shard` (its byte caps and limits; a refused
    sample keeps its row, with its status in the image cell). Labels are class positions (with
    ``classnames``) or class names (looked up in ``classnames``, or sorted into the classes).

    Args:
        shards: shard files, a folder of them, a glob or a brace pattern (:func:`~clipeval.data.shards.list_shards`).
        label_column: the class column.
        image_column: the image column (in a tar, where the image goes).
        classnames: the class names in label order.
        limits, max_member_bytes: what one shard may cost to read.
        name: the set's name (default: the first shard's folder name).

    Raises:
        PairsTableError: a shard cannot be read or has no class column, or a label is outside the classes.
    """
    paths = list_shards(shards)
    tables = []
    for path in paths:
        try:
            table = read_shard(path, image_column, label_column, max_member_bytes=max_member_bytes, limits=limits)
        except ShardReadError as error:
            raise PairsTableError(f"cannot read the shard: {error}") from error
        table.attrs = {}
        tables.append(table.assign(shard=str(path)))
    table = pd.concat(tables, ignore_index=True)
    labels, names = _labels(table[label_column], tuple(classnames) if classnames is not None else None,
                            f"{paths[0].parent} ({len(paths)} shard(s))")
    images = table.drop(columns=[label_column]).rename(columns={image_column: IMAGE_COLUMN})
    images.insert(1, LABEL_COLUMN, labels)
    base_dirs = {str(path.parent.resolve()) for path in paths}
    if len(base_dirs) > 1:  # relative image paths would each need their own shard's folder
        images[IMAGE_COLUMN] = [_absolute(ref, path) for ref, path in zip(images[IMAGE_COLUMN], table["shard"])]
    return ClassificationSet(name or paths[0].resolve().parent.name, images, names,
                             f"{shards} (shards)", base_dirs.pop() if len(base_dirs) == 1 else None)


def _absolute(ref: object, shard: str) -> object:
    """A shard's relative image path made absolute against its shard's folder (other cells as they are)."""
    if isinstance(ref, str) and ref and "://" not in ref and not Path(ref).is_absolute():
        return str(Path(shard).resolve().parent / ref)
    return ref


def read_scene_classes(root: str | Path, split: str = "test", attribute: str = "shape") -> ClassificationSet:
    """The synthetic scenes whose objects all share one shape (or one colour), labelled by it.

    Scenes of one object or a group of equal ones always qualify; a pair does when both objects share
    the attribute. The class names are :data:`~clipeval.data.scenes.SHAPES` or
    :data:`~clipeval.data.scenes.COLOURS` (as the ``scenes-shape`` and ``scenes-colour`` packaged prompts).

    Args:
        root: the dataset folder (:func:`clipeval.data.scenes.generate_scenes`).
        split: ``train``, ``val`` or ``test``.
        attribute: ``shape`` or ``colour``.

    Raises:
        PairsTableError: an unknown attribute, no ``scenes.csv``, or no scene of the split qualifies.
    """
    if attribute not in SCENE_ATTRIBUTES:
        raise PairsTableError(f"attribute must be one of {', '.join(SCENE_ATTRIBUTES)}, not {attribute!r}")
    root = Path(root)
    try:
        table = pd.read_csv(root / "scenes.csv", keep_default_na=False)
    except FileNotFoundError as error:
        raise PairsTableError(f"{root / 'scenes.csv'}: no such file {where(root)}; generate the scenes first") \
            from error
    classnames = SCENE_ATTRIBUTES[attribute]
    rows = []
    for record in table[table["split"] == split].to_dict("records"):
        values = {getattr(obj, attribute) for obj in scene_from_row(record).objects}
        if len(values) == 1:
            rows.append({IMAGE_COLUMN: record["image"], LABEL_COLUMN: classnames.index(values.pop()),
                         "scene_id": record["scene_id"], "layout": record["layout"]})
    if not rows:
        raise PairsTableError(f"{root}: no {split} scene has objects of a single {attribute}")
    images = pd.DataFrame(rows).astype({LABEL_COLUMN: np.int64})
    return ClassificationSet(f"scenes-{split}-{attribute}", images, tuple(classnames),
                             f"{root} (scenes by {attribute})", str(root.resolve()))
