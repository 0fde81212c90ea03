"""The embedded "challenge set": photos bundled with scikit-image, with our own captions.

Each image gets its one matching caption (``match=True``) and, for contrast, the captions of
two other images (``match=False``), so matched and mismatched score distributions can be
compared. The images vary on purpose: sizes from 14x25 to 1411x1411, greyscale (L),
RGBA with transparency, a palette GIF animation, JPEG and PNG.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import skimage

from clipeval.atomic import write_csv
from clipeval.paths import CHALLENGE_DIR

# file bundled with scikit-image -> our caption describing it
CAPTIONS = {
    "astronaut.png": "an astronaut in a white spacesuit posing in front of an American flag",
    "camera.png": "a black and white photo of a man with a camera on a tripod",
    "chelsea.png": "a ginger tabby cat looking to the side",
    "coffee.png": "a cup of coffee with latte art on a saucer",
    "coins.png": "a greyscale photo of many old coins on a dark background",
    "horse.png": "the black silhouette of a horse on a transparent background",
    "hubble_deep_field.jpg": "a deep space telescope image full of distant galaxies",
    "logo.png": "a colourful logo with the letters of scikit-image",
    "moon.png": "a greyscale close-up of the cratered surface of the moon",
    "motorcycle_left.png": "a red motorcycle parked indoors next to a shelf",
    "page.png": "a scanned page of printed text",
    "retina.jpg": "a medical photograph of the retina of a human eye",
    "rocket.jpg": "a rocket on its launch pad under a blue sky",
    "text.png": "handwritten and printed letters on a grey background",
    "brick.png": "a close-up of a brick wall",
    "no_time_for_that_tiny.gif": "a tiny animated gif of a person",
}
MISMATCH_OFFSETS = (3, 7)  # mismatched captions come from the images this many places further on


def skimage_data_dir() -> Path:
    """The folder inside the installed scikit-image package that holds its bundled images."""
    return Path(skimage.__file__).parent / "data"


def build_challenge_set(out_dir: str | Path = CHALLENGE_DIR) -> Path:
    """Copy the bundled images to ``out_dir/images`` and write ``out_dir/pairs.csv``.

    Columns: ``image`` (path relative to the CSV), ``caption``, ``match`` (True when the caption
    describes the image), ``image_name``, ``caption_source`` (the image the caption was written for).

    Returns:
        Path of the pairs CSV.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    names = list(CAPTIONS)
    rows = []
    for i, name in enumerate(names):
        shutil.copyfile(skimage_data_dir() / name, out_dir / "images" / name)
        sources = [name] + [names[(i + offset) % len(names)] for offset in MISMATCH_OFFSETS]
        for source in sources:
            rows.append({"image": f"images/{name}", "caption": CAPTIONS[source], "match": source == name,
                         "image_name": name, "caption_source": source})
    path = out_dir / "pairs.csv"
    write_csv(path, pd.DataFrame(rows))
    return path
