"""SugarCrepe (Hsieh et al., NeurIPS 2023) as a pairs table of true captions and their hard negatives.

The benchmark's data is seven JSON files in its repository's ``data/`` folder (RAIVNLab/sugar-crepe), one per
category, each an object ``id -> {"filename": a COCO 2017 val image, "caption": its true caption,
"negative_caption": the hard negative}``; the images are COCO's ``val2017/``. :func:`read_sugarcrepe` turns
them into the pairs form every hard-negative table takes (:mod:`clipeval.eval.hard_negatives`): per item a true
row (``match`` True) and a negative row (``match`` False, ``negative_kind`` its category, ``twin_caption`` the
true caption), both on the item's image.

Every item keeps its rows: an image file that is not there gets the status ``missing`` (one that leaves the
images folder ``outside_root``, an empty file name ``bad_reference``), never a silent drop. A file that is not
SugarCrepe's shape raises :class:`~clipeval.data.options.PairsTableError` with one line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clipeval.data.options import PairsTableError
from clipeval.paths import where

# file stem -> category, in main_eval.py's order
SUGARCREPE_CATEGORIES = {"add_obj": "add-object", "add_att": "add-attribute", "replace_obj": "replace-object",
                         "replace_att": "replace-attribute", "replace_rel": "replace-relation",
                         "swap_obj": "swap-object", "swap_att": "swap-attribute"}
# the repository's first spelling of the object files (data/add_ent.json...), read when the _obj file is absent
EARLIER_STEMS = {"add_obj": "add_ent", "replace_obj": "replace_ent", "swap_obj": "swap_ent"}
ITEM_FIELDS = ("filename", "caption", "negative_caption")
PAIR_COLUMNS = ["image", "caption", "match", "negative_kind", "twin_caption", "category", "item_id", "status",
                "error"]


def sugarcrepe_file(data_dir: Path, stem: str) -> Path:
    """A category's JSON file in ``data_dir``: ``<stem>.json``, or its earlier ``_ent`` name when only that exists."""
    path = data_dir / f"{stem}.json"
    earlier = data_dir / f"{EARLIER_STEMS.get(stem, stem)}.json"
    return earlier if not path.is_file() and earlier.is_file() else path


def read_sugarcrepe(data_dir: str | Path, images_dir: str | Path,
                    categories: Sequence[str] | None = None) -> pd.DataFrame:
    """Read SugarCrepe's JSON files and check its images.

    Args:
        data_dir: the folder of the seven JSON files (the repository's ``data/``).
        images_dir: COCO's ``val2017/`` folder.
        categories: file stems to read (default: all seven of :data:`SUGARCREPE_CATEGORIES`).

    Returns:
        Two rows per item (:data:`PAIR_COLUMNS`), categories in the order asked, items in file order:
        ``image`` (the file name, relative to ``images_dir``), ``caption``, ``match``, ``negative_kind``
        (empty on the true row), ``twin_caption`` (the true caption, on the negative row), ``category``
        (``replace-object``...), ``item_id`` (the file's key), ``status`` (``ok``, ``missing``,
        ``outside_root`` or ``bad_reference``) and ``error``; ``attrs["base_dir"]`` is ``images_dir``.

    Raises:
        PairsTableError: a missing folder or category file, an unknown category, or a file that is not
            an object of items with ``filename``, ``caption`` and ``negative_caption``.
    """
    data_dir, images_dir = Path(data_dir), Path(images_dir)
    for folder, what in ((data_dir, "SugarCrepe data"), (images_dir, "COCO val2017 images")):
        if not folder.is_dir():
            raise PairsTableError(f"{folder}: no such folder {where(folder)} (the {what})")
    stems = list(SUGARCREPE_CATEGORIES) if categories is None else list(categories)
    unknown = [stem for stem in stems if stem not in SUGARCREPE_CATEGORIES]
    if unknown:
        raise PairsTableError(f"unknown SugarCrepe categories {unknown}; known: {', '.join(SUGARCREPE_CATEGORIES)}")
    root = images_dir.resolve()
    rows = []
    for stem in stems:
        for item_id, item in _items(sugarcrepe_file(data_dir, stem)):
            status, error = _image_status(item["filename"], root)
            common = {"image": item["filename"], "category": SUGARCREPE_CATEGORIES[stem], "item_id": item_id,
                      "status": status, "error": error}
            rows.append({**common, "caption": item["caption"], "match": True, "negative_kind": "", "twin_caption": ""})
            rows.append({**common, "caption": item["negative_caption"], "match": False,
                         "negative_kind": SUGARCREPE_CATEGORIES[stem], "twin_caption": item["caption"]})
    table = pd.DataFrame(rows, columns=PAIR_COLUMNS)
    table.attrs["base_dir"] = str(root)
    return table


def _items(path: Path) -> list[tuple[str, dict]]:
    """A category file's items in file order, each checked to hold the text fields of :data:`ITEM_FIELDS`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PairsTableError(f"{path}: no such SugarCrepe file {where(path)}") from error
    except (OSError, ValueError) as error:
        raise PairsTableError(f"{path}: cannot read it as JSON ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict) or not data:
        raise PairsTableError(f"{path}: not a SugarCrepe file (an object of items: id -> {{filename, caption, "
                              "negative_caption}})")
    for item_id, item in data.items():
        if not isinstance(item, dict) or not all(isinstance(item.get(name), str) for name in ITEM_FIELDS):
            raise PairsTableError(f"{path}: item {item_id!r} needs text fields {', '.join(ITEM_FIELDS)}; it is "
                                  f"{str(item)[:120]}")
    return list(data.items())


def _image_status(filename: str, root: Path) -> tuple[str, str]:
    """Whether an item's image is in the images folder: ``ok``, ``bad_reference``, ``outside_root`` or ``missing``."""
    if not filename.strip():
        return "bad_reference", "the item names no image file"
    path = (root / filename).resolve()
    if not path.is_relative_to(root):
        return "outside_root", f"{filename} leaves the images folder {root}; not read"
    if not path.is_file():
        return "missing", f"no file {path}"
    return "ok", ""
