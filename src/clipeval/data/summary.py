"""Describe a pairs table: counts, image sizes and modes, caption lengths (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from clipeval.data.fetch import is_url


def image_info(ref: str, base_dir: str | Path | None) -> dict:
    """Width, height, mode, format and frame count of one local image, read from its header.

    URLs and unreadable files get ``readable=False`` (nothing is downloaded here).
    """
    path = Path(ref) if base_dir is None or Path(ref).is_absolute() else Path(base_dir) / ref
    if is_url(ref):
        return {"image": ref, "readable": False}
    try:
        with Image.open(path) as image:
            return {"image": ref, "readable": True, "width": image.width, "height": image.height,
                    "mode": image.mode, "format": image.format, "frames": getattr(image, "n_frames", 1)}
    except (OSError, ValueError):
        return {"image": ref, "readable": False}


def describe_images(pairs: pd.DataFrame, image_column: str = "image") -> pd.DataFrame:
    """One row per distinct image: size, mode, format, frames (``pairs.attrs['base_dir']`` resolves paths)."""
    base_dir = pairs.attrs.get("base_dir")
    return pd.DataFrame([image_info(ref, base_dir) for ref in pairs[image_column].drop_duplicates()])


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
