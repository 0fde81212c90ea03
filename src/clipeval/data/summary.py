"""Describe a pairs table: counts, image sizes and modes, caption lengths (no model needed).

Image files are opened the one way the project opens images (:func:`clipeval.data.images.open_image`:
only the formats of :data:`~clipeval.data.images.IMAGE_FORMATS`), header only. An image that
cannot be described is a row with ``readable=False`` and its ``status`` and ``error``, never an
exception: a missing file, a format outside the allow-list, a decompression bomb (a header
declaring more pixels than :data:`~clipeval.data.images.MAX_PIXELS`) or a corrupt header.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
from PIL import Image

from clipeval.data.fetch import is_url
from clipeval.data.images import failure_status, open_image
from clipeval.data.options import MAX_PIXELS

HEADER_FIELDS = ("width", "height", "mode", "format", "frames")


def image_info(ref: str, base_dir: str | Path | None) -> dict:
    """Width, height, mode, format and frame count of one local image, read from its header.

    Args:
        ref: the image's path (absolute, or relative to ``base_dir``) or URL.
        base_dir: the folder relative paths are resolved against.

    Returns:
        ``image``, ``readable``, ``status`` and ``error``, then the header's fields (None when
        unknown). ``status`` is ``ok`` or a code of :data:`clipeval.data.images.STATUSES`
        (``bad_reference``, ``missing``, ``read_error``, ``empty_file``, ``format_refused``,
        ``too_many_pixels``, ``truncated``, ``decode_error``), or ``not_fetched`` for a URL
        (nothing is downloaded here). A header over the pixel cap keeps its width and height.
    """
    info = {"image": ref, "readable": False, "status": "ok", "error": "", **dict.fromkeys(HEADER_FIELDS)}
    if not isinstance(ref, str) or not ref.strip():
        return {**info, "status": "bad_reference", "error": f"no image reference in this row ({ref!r})"}
    if is_url(ref.strip()):
        return {**info, "status": "not_fetched", "error": "a URL: only local files are described (no download)"}
    path = Path(ref) if base_dir is None or Path(ref).is_absolute() else Path(base_dir) / ref
    try:
        if path.stat().st_size == 0:
            return {**info, "status": "empty_file", "error": "the file is empty (0 bytes)"}
        with warnings.catch_warnings():  # over the cap is this row's status, not a warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_image(path) as image:
                info.update(width=image.width, height=image.height, mode=image.mode, format=image.format,
                            frames=getattr(image, "n_frames", 1))
    except Exception as error:  # noqa: BLE001 - any unreadable file is one row's status, never the table's end
        status, reason = failure_status(error)
        return {**info, "status": status, "error": reason}
    if info["width"] * info["height"] > MAX_PIXELS:
        return {**info, "status": "too_many_pixels",
                "error": f"{info['width']}x{info['height']} exceeds the {MAX_PIXELS:,}-pixel cap"}
    return {**info, "readable": True}


def describe_images(pairs: pd.DataFrame, image_column: str = "image") -> pd.DataFrame:
    """One row per distinct image: :func:`image_info` (``pairs.attrs['base_dir']`` resolves paths)."""
    base_dir = pairs.attrs.get("base_dir")
    rows = [image_info(ref, base_dir) for ref in pairs[image_column].drop_duplicates()]
    columns = ["image", "readable", "status", "error", *HEADER_FIELDS]
    table = pd.DataFrame(rows, columns=columns)
    table["readable"] = table["readable"].astype(bool)
    return table


def caption_lengths(pairs: pd.DataFrame, caption_column: str = "caption") -> pd.DataFrame:
    """Characters and whitespace-separated words per caption (0 for missing captions)."""
    captions = pairs[caption_column].fillna("").astype(str)
    return pd.DataFrame({"characters": captions.str.len(), "words": captions.str.split().str.len()})


def count_pairs(pairs: pd.DataFrame, image_column: str = "image", caption_column: str = "caption") -> pd.Series:
    """Headline counts: rows, distinct images and captions, matched/mismatched when known."""
    counts = {"pairs": len(pairs), "distinct images": pairs[image_column].nunique(),
              "distinct captions": pairs[caption_column].nunique(),
              "missing captions": int(pairs[caption_column].isna().sum())}
    if "match" in pairs.columns:
        counts["matched pairs"] = int(pairs["match"].astype(bool).sum())
        counts["mismatched pairs"] = int((~pairs["match"].astype(bool)).sum())
    return pd.Series(counts, name="count")
