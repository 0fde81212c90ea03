"""A small image collection and its finder index, for the web page's tests (test_finder_app, test_finder_browser)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

# (color name, RGB, shape): every image differs, so an image's own vector is its nearest neighbour
SHAPES = [("red", (220, 30, 30), "circle"), ("blue", (30, 60, 220), "square"), ("green", (30, 170, 60), "triangle"),
          ("yellow", (230, 210, 40), "circle"), ("purple", (130, 40, 170), "square"), ("orange", (240, 140, 20),
                                                                                       "triangle"),
          ("cyan", (40, 200, 210), "circle"), ("black", (15, 15, 15), "square"), ("pink", (240, 120, 180), "triangle"),
          ("brown", (120, 70, 30), "circle"), ("gray", (128, 128, 128), "square"), ("teal", (20, 120, 120),
                                                                                     "triangle")]
# a caption that would run as markup if the page ever used innerHTML
HOSTILE_CAPTION = '<img src=x onerror="document.body.dataset.pwned=1"><b>bold</b> & a circle'


def shape_png(color: tuple[int, int, int], shape: str, size: int = 48, offset: int = 0) -> bytes:
    """A PNG of one colored shape on white."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (8 + offset, 8, size - 8, size - 8 - offset)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(size // 2, 6), (6 + offset, size - 6), (size - 6, size - 6)], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def make_collection(folder: Path, captions: int = 1) -> Path:
    """Write the images (one of them missing from disk, so one row fails) and ``pairs.csv``, with ``captions`` rows
    per image as COCO gives them (the first caption as with one, then ``a red circle, in words 1``...); its path."""
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for number, (name, rgb, shape) in enumerate(SHAPES):
        path = images / f"{name}-{shape}.png"
        path.write_bytes(shape_png(rgb, shape, offset=number % 3))
        caption = HOSTILE_CAPTION if number == 0 else f"a {name} {shape}"
        rows += [{"image": f"images/{path.name}", "caption": caption if k == 0 else f"a {name} {shape}, in words {k}",
                  "color": name, "shape": shape} for k in range(captions)]
    rows.append({"image": "images/missing.png", "caption": "a file that is not there", "color": "none",
                 "shape": "none"})
    pairs = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(pairs, index=False)
    return pairs


def build_small_index(folder: Path, specs: list[str], captions: int = 1) -> Path:
    """Index the collection (``captions`` rows per image) with ``specs`` (tiny checkpoints) into ``folder/index``;
    the index folder."""
    from clipeval.embed.options import EmbedOptions
    from clipeval.finder.index import build_index

    pairs = make_collection(folder / "collection", captions)
    out = folder / "index"
    build_index(str(pairs), specs, out, embed=EmbedOptions(device="cpu", progress=False))
    return out
