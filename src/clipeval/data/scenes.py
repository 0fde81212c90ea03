"""Captioned scenes: a deterministic synthetic image-caption dataset with hard negatives.

Every image is a simple scene drawn with PIL: one object, two objects in a spatial relation
(left of, right of, above, below), or a group of two or three identical objects, on one of
four backgrounds, sometimes with a sign showing a word (PIL's embedded bitmap font, so no font
files are needed). An object has a shape, a colour and a size.

A caption is rendered from *facts* (which objects, with colour, shape, optional size and an
exact count; optionally their relation, the background and the sign's word) and a *style*
(sentence frame, relation wording, background and sign phrasing). Facts make truth checkable:
:func:`describes` decides whether a caption is true of any scene, which gives the retrieval
relevance table (a caption like "two green squares" truly describes many images) and verifies
every caption. A caption is true of a scene when every stated fact holds; unstated attributes
are free. A count is exact ("a red circle" means exactly one red circle).

Hard negatives are the true caption with one attribute changed, rendered in the same style, so
the text differs only in the swapped words: ``colour`` (the two objects' colours swapped, or
one object's colour replaced), ``relation`` (the relation replaced by its opposite) and
``count`` (a different number of one object). Each is checked to be false of its scene.

Compositional split: the colour-shape pairs in :data:`HELD_OUT` never occur in the train or
val images or captions; half of the test scenes contain one, so test metrics can be split into
seen and unseen combinations.

Output layout under ``root``::

    metadata.json                 generator parameters, vocabulary, counts (no timestamps)
    scenes.csv                    one row per scene and its attributes (objects as JSON)
    pairs_{train,val,test}.csv    image, caption, match, split, scene_id, negative_kind,
                                  seen_combination, twin_caption, layout
    queries_{val,test}.csv        query_id, caption, seen_combination, n_relevant: every
                                  distinct true caption of the split
    images_{val,test}.csv         image_id (the scene id), image, seen_combination, layout
    relevance_{val,test}.csv      query_id, image_id: every (caption, scene) pair of the split
                                  where the caption truly describes the scene
    images/{split}/{scene_id}.png

The three retrieval tables are the format of
:func:`clipeval.data.retrieval_sets.read_retrieval_tables` (see :func:`read_scenes_retrieval`).
``seen_combination`` of a pair is False when its image or its caption holds a held-out
combination; of a query, when the caption names one.

Generation is byte-for-byte deterministic: each scene draws from its own
``numpy.random.default_rng([seed, split, index])``, PNGs carry no metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from clipeval.atomic import atomic_path, write_csv, write_text
from clipeval.data.options import SceneSizes
from clipeval.data.retrieval_sets import RetrievalSet, read_retrieval_tables
from clipeval.paths import SCENES_DIR

SPLITS = ("train", "val", "test")
RETRIEVAL_SPLITS = ("val", "test")

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 230),
           "yellow": (245, 215, 20), "purple": (150, 50, 190), "orange": (250, 135, 20)}
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = {"small": 6, "large": 10}  # radius in the 64-unit drawing grid
BACKGROUNDS = ("white", "gray", "black", "striped")
WORDS = ("SALE", "STOP", "OPEN", "CAFE", "TAXI")
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "cross"), ("yellow", "square"))
NEGATIVE_KINDS = ("colour", "relation", "count")

GRID = 64  # scenes are laid out on a 64x64 grid and scaled to the image size
SIGN_HEIGHT = 15
SIGN_PROBABILITY = 0.35
LAYOUTS = ("single", "pair", "group")
LAYOUT_WEIGHTS = (0.3, 0.45, 0.25)

FRAMES = ("{}", "a picture of {}", "an image of {}", "a drawing showing {}")
RELATION_WORDS = {"left of": ("to the left of", "left of"), "right of": ("to the right of", "right of"),
                  "above": ("above", "over"), "below": ("below", "under")}
BACKGROUND_PHRASES = (" on a {} background", " against a {} background")
SIGN_PHRASES = (' and a sign that says "{}"', ' and an ad reading "{}"', ' with a board showing the word "{}"')


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; ``x``, ``y`` is its centre on the 64-unit grid."""

    shape: str
    colour: str
    size: str
    x: int
    y: int


@dataclass(frozen=True)
class Scene:
    """One image's content.

    Attributes:
        scene_id: ``{split}-{index:05d}``.
        split: ``train``, ``val`` or ``test``.
        layout: ``single``, ``pair`` or ``group``.
        background: one of :data:`BACKGROUNDS`.
        objects: the drawn objects.
        relation: for ``pair`` scenes, where object 0 is relative to object 1; else ``None``.
        word: the sign's word, or ``None`` when there is no sign.
    """

    scene_id: str
    split: str
    layout: str
    background: str
    objects: tuple[SceneObject, ...]
    relation: str | None = None
    word: str | None = None

    @property
    def seen_combination(self) -> bool:
        """False when the scene contains a held-out colour-shape combination."""
        return not any((obj.colour, obj.shape) in HELD_OUT for obj in self.objects)


@dataclass(frozen=True)
class Mention:
    """An object phrase of a caption: exactly ``count`` objects of this colour, shape (and size)."""

    colour: str
    shape: str
    size: str | None
    count: int = 1


@dataclass(frozen=True)
class Facts:
    """What a caption claims; ``None`` fields are not stated (so not constrained)."""

    mentions: tuple[Mention, ...]
    relation: str | None = None  # of mentions[0] relative to mentions[1]
    background: str | None = None
    word: str | None = None

    @property
    def seen_combination(self) -> bool:
        """False when the caption names a held-out colour-shape combination."""
        return not any((m.colour, m.shape) in HELD_OUT for m in self.mentions)


@dataclass(frozen=True)
class Style:
    """How facts are worded; a hard negative keeps its twin's style."""

    frame: int = 0
    relation_words: int = 0
    object_first: bool = False  # "B right of A" instead of "A left of B"
    background_phrase: int = 0
    sign_phrase: int = 0


def _mention_phrase(mention: Mention) -> str:
    words = [COUNT_WORDS[mention.count]] + ([mention.size] if mention.size else []) + [mention.colour]
    if mention.count == 1 and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join([*words, mention.shape if mention.count == 1 else PLURALS[mention.shape]])


def render_caption(facts: Facts, style: Style) -> str:
    """Word a caption's facts in a style.

    Args:
        facts: what the caption states.
        style: sentence frame and phrasing choices.

    Returns:
        The caption text, e.g. ``a picture of a small red circle to the left of a blue square``.
    """
    phrases = [_mention_phrase(mention) for mention in facts.mentions]
    if facts.relation is None:
        core = " and ".join(phrases)
    elif style.object_first:
        core = f"{phrases[1]} {RELATION_WORDS[OPPOSITE[facts.relation]][style.relation_words]} {phrases[0]}"
    else:
        core = f"{phrases[0]} {RELATION_WORDS[facts.relation][style.relation_words]} {phrases[1]}"
    if facts.background:
        core += BACKGROUND_PHRASES[style.background_phrase].format(facts.background)
    if facts.word:
        core += SIGN_PHRASES[style.sign_phrase].format(facts.word)
    return FRAMES[style.frame].format(core)


def _matching(scene: Scene, mention: Mention) -> list[int]:
    return [index for index, obj in enumerate(scene.objects)
            if obj.colour == mention.colour and obj.shape == mention.shape
            and mention.size in (None, obj.size)]


def _relation_between(scene: Scene, first: int, second: int) -> str | None:
    if scene.relation is None or {first, second} != {0, 1}:
        return None
    return scene.relation if first == 0 else OPPOSITE[scene.relation]


def describes(facts: Facts, scene: Scene) -> bool:
    """Whether every stated fact of a caption holds in a scene.

    Args:
        facts: the caption's facts.
        scene: the scene.

    Returns:
        True when background and word (if stated) match, each mention matches exactly its
        count of objects, and the stated relation holds between the two mentioned objects.
    """
    if facts.background not in (None, scene.background) or facts.word not in (None, scene.word):
        return False
    matches = [_matching(scene, mention) for mention in facts.mentions]
    if any(len(found) != mention.count for found, mention in zip(matches, facts.mentions)):
        return False
    if facts.relation is None:
        return True
    if any(len(found) != 1 for found in matches):  # relations hold between single objects only
        return False
    (first,), (second,) = matches
    return _relation_between(scene, first, second) == facts.relation


# ----------------------------------------------------------------------------- sampling scenes

def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _colour_shape(rng: np.random.Generator, allow_held_out: bool, exclude_colours=()) -> tuple[str, str]:
    while True:
        pair = (_choice(rng, tuple(COLOURS)), _choice(rng, SHAPES))
        if pair[0] not in exclude_colours and (allow_held_out or pair not in HELD_OUT):
            return pair


def _place_single(rng, radius: int, top: int, bottom: int) -> tuple[int, int]:
    return (int(rng.integers(radius + 1, GRID - radius)), int(rng.integers(top + radius, bottom - radius + 1)))


def _place_pair(rng, relation: str, radii: tuple[int, int], top: int, bottom: int) -> list[tuple[int, int]]:
    """Centres for objects 0 and 1 with object 0 clearly ``relation`` object 1 (gap >= 3)."""
    horizontal = relation in ("left of", "right of")
    first_is_low = relation in ("left of", "above")  # object 0 has the smaller coordinate
    low_r, high_r = radii if first_is_low else radii[::-1]
    start, stop = (1, GRID - 1) if horizontal else (top, bottom)
    low = int(rng.integers(start + low_r, stop - low_r - 2 * high_r - 2))
    high = int(rng.integers(low + low_r + high_r + 3, stop - high_r + 1))
    across_start, across_stop = (top, bottom) if horizontal else (1, GRID - 1)
    centre = int(rng.integers(across_start + max(radii) + 2, across_stop - max(radii) - 2))
    across = [centre + int(rng.integers(-2, 3)) for _ in radii]
    along = (low, high) if first_is_low else (high, low)
    return [(a, c) if horizontal else (c, a) for a, c in zip(along, across)]


def _place_group(rng, count: int, radius: int, top: int, bottom: int) -> list[tuple[int, int]]:
    while True:
        centres = [_place_single(rng, radius, top, bottom) for _ in range(count)]
        if all((ax - bx) ** 2 + (ay - by) ** 2 >= (2 * radius + 5) ** 2
               for i, (ax, ay) in enumerate(centres) for bx, by in centres[i + 1:]):
            return centres


def sample_scene(scene_id: str, split: str, rng: np.random.Generator, unseen: bool = False) -> Scene:
    """Draw one scene's attributes.

    Args:
        scene_id: the scene's id.
        split: its split (train and val never contain :data:`HELD_OUT` combinations).
        rng: the scene's own random generator.
        unseen: make object 0 a held-out colour-shape combination (test scenes only).

    Returns:
        The scene.
    """
    layout = LAYOUTS[int(rng.choice(len(LAYOUTS), p=LAYOUT_WEIGHTS))]
    background = _choice(rng, BACKGROUNDS)
    word = _choice(rng, WORDS) if rng.random() < SIGN_PROBABILITY else None
    top, bottom = 1, GRID - 1 - (SIGN_HEIGHT if word else 0)
    first = _choice(rng, HELD_OUT) if unseen else _colour_shape(rng, allow_held_out=False)
    relation = None
    if layout == "single":
        size = _choice(rng, tuple(SIZES))
        kinds = [(*first, size)]
        centres = [_place_single(rng, SIZES[size], top, bottom)]
    elif layout == "pair":
        second = _colour_shape(rng, allow_held_out=unseen, exclude_colours=(first[0],))
        kinds = [(*first, _choice(rng, tuple(SIZES))), (*second, _choice(rng, tuple(SIZES)))]
        relation = _choice(rng, RELATIONS)
        centres = _place_pair(rng, relation, (SIZES[kinds[0][2]], SIZES[kinds[1][2]]), top, bottom)
    else:
        count = int(rng.integers(2, 4))
        kinds = [(*first, "small")] * count
        centres = _place_group(rng, count, SIZES["small"], top, bottom)
    objects = tuple(SceneObject(shape, colour, size, x, y) for (colour, shape, size), (x, y) in zip(kinds, centres))
    return Scene(scene_id, split, layout, background, objects, relation, word)


# ----------------------------------------------------------------------------- drawing

def _shape_points(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)]
    arm = r * 0.38
    return [(x - arm, y - r), (x + arm, y - r), (x + arm, y - arm), (x + r, y - arm), (x + r, y + arm),
            (x + arm, y + arm), (x + arm, y + r), (x - arm, y + r), (x - arm, y + arm), (x - r, y + arm),
            (x - r, y - arm), (x - arm, y - arm)]


def _draw_background(draw: ImageDraw.ImageDraw, background: str, size: int) -> None:
    fills = {"white": (250, 250, 250), "gray": (128, 128, 128), "black": (15, 15, 15)}
    if background in fills:
        draw.rectangle((0, 0, size, size), fill=fills[background])
        return
    draw.rectangle((0, 0, size, size), fill=(235, 235, 235))
    step = max(2, size // 16)
    for offset in range(-size, size, 2 * step):
        draw.polygon([(offset, size), (offset + step, size), (offset + step + size, 0), (offset + size, 0)],
                     fill=(175, 175, 175))


def _draw_sign(image: Image.Image, word: str, x: int, scale: float) -> None:
    font = ImageFont.load_default_imagefont()
    left, top, right, _ = font.getbbox(word)
    text = Image.new("RGB", (right - left + 4, SIGN_HEIGHT - 2), (255, 255, 255))
    ImageDraw.Draw(text).text((2 - left, 1 - top), word, fill=(0, 0, 0), font=font)
    board = Image.new("RGB", (text.width + 2, text.height + 2), (0, 0, 0))
    board.paste(text, (1, 1))
    board = board.resize((round(board.width * scale), round(board.height * scale)), Image.Resampling.NEAREST)
    image.paste(board, (min(round(x * scale), image.width - board.width - 1), image.height - board.height - 1))


def draw_scene(scene: Scene, image_size: int = 64, sign_x: int = 4) -> Image.Image:
    """Render a scene as an RGB image.

    Args:
        scene: the scene.
        image_size: side of the square image in pixels (the layout grid is scaled to it).
        sign_x: left edge of the sign on the 64-unit grid.

    Returns:
        The image.
    """
    scale = image_size / GRID
    image = Image.new("RGB", (image_size, image_size))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, image_size)
    for obj in scene.objects:
        x, y, r = obj.x * scale, obj.y * scale, SIZES[obj.size] * scale
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif obj.shape == "square":
            side = r * 0.88
            draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
        else:
            draw.polygon(_shape_points(obj.shape, x, y, r), fill=fill)
    if scene.word:
        _draw_sign(image, scene.word, sign_x, scale)
    return image


# ----------------------------------------------------------------------------- captions

def _fact_variants(scene: Scene) -> list[Facts]:
    """Positive facts of a scene, most detailed first."""
    objects = scene.objects
    if scene.layout == "pair":
        sized = tuple(Mention(obj.colour, obj.shape, obj.size) for obj in objects)
        bare = tuple(Mention(obj.colour, obj.shape, None) for obj in objects)
        variants = [Facts(sized, scene.relation, scene.background, scene.word), Facts(bare, scene.relation),
                    Facts(bare, scene.relation, scene.background), Facts(sized, None, None, scene.word),
                    Facts(sized, scene.relation), Facts(bare)]
    else:
        first = objects[0]
        count = len(objects)
        sized = (Mention(first.colour, first.shape, first.size, count),)
        bare = (Mention(first.colour, first.shape, None, count),)
        variants = [Facts(sized, None, scene.background, scene.word), Facts(bare),
                    Facts(sized, None, scene.background), Facts(bare, None, None, scene.word),
                    Facts(sized), Facts(bare, None, scene.background)]
    return list(dict.fromkeys(variants))


def _random_style(rng: np.random.Generator) -> Style:
    return Style(frame=int(rng.integers(len(FRAMES))), relation_words=int(rng.integers(2)),
                 object_first=bool(rng.random() < 0.5), background_phrase=int(rng.integers(len(BACKGROUND_PHRASES))),
                 sign_phrase=int(rng.integers(len(SIGN_PHRASES))))


def _negative(facts: Facts, kind: str, scene: Scene, rng: np.random.Generator) -> Facts | None:
    """The facts with one attribute of ``kind`` changed, or None when that kind does not apply."""
    mentions = list(facts.mentions)
    if kind == "relation":
        return replace(facts, relation=OPPOSITE[facts.relation]) if facts.relation else None
    if kind == "count":
        index = int(rng.integers(len(mentions)))
        new_count = _choice(rng, [c for c in COUNT_WORDS if c != mentions[index].count])
        mentions[index] = replace(mentions[index], count=new_count)
    elif len(mentions) == 2:
        mentions = [replace(mentions[0], colour=mentions[1].colour), replace(mentions[1], colour=mentions[0].colour)]
    else:
        others = [c for c in COLOURS if c != mentions[0].colour
                  and (scene.split == "test" or (c, mentions[0].shape) not in HELD_OUT)]
        mentions[0] = replace(mentions[0], colour=_choice(rng, others))
    return replace(facts, mentions=tuple(mentions))


def caption_scene(scene: Scene, rng: np.random.Generator, captions_per_image: int = 4) -> list[dict]:
    """Positive captions and hard negatives for one scene.

    Args:
        scene: the scene.
        rng: the scene's random generator.
        captions_per_image: how many true captions (distinct texts) to write at most.

    Returns:
        Rows with ``caption``, ``match``, ``negative_kind``, ``twin_caption``, ``facts``.
    """
    positives: dict[str, tuple[Facts, Style]] = {}
    for facts in _fact_variants(scene)[:captions_per_image]:
        style = _random_style(rng)
        positives.setdefault(render_caption(facts, style), (facts, style))
    rows = [{"caption": text, "match": True, "negative_kind": "", "twin_caption": "", "facts": facts}
            for text, (facts, _) in positives.items()]
    for kind in NEGATIVE_KINDS:
        eligible = [text for text, (facts, _) in positives.items() if kind != "relation" or facts.relation]
        if not eligible:
            continue
        twin = eligible[int(rng.integers(len(eligible)))]
        facts, style = positives[twin]
        negative = _negative(facts, kind, scene, rng)
        if negative is None or describes(negative, scene) or (scene.split != "test" and not negative.seen_combination):
            continue
        rows.append({"caption": render_caption(negative, style), "match": False, "negative_kind": kind,
                     "twin_caption": twin, "facts": negative})
    return rows


# ----------------------------------------------------------------------------- the dataset

def _scene_rows(scene: Scene, image: str) -> dict:
    return {"scene_id": scene.scene_id, "split": scene.split, "image": image, "layout": scene.layout,
            "background": scene.background, "word": scene.word or "", "relation": scene.relation or "",
            "objects": json.dumps([asdict(obj) for obj in scene.objects]),
            "seen_combination": scene.seen_combination}


def scene_from_row(row: dict) -> Scene:
    """Rebuild a :class:`Scene` from a ``scenes.csv`` row (as a dict)."""
    objects = tuple(SceneObject(**obj) for obj in json.loads(row["objects"]))
    return Scene(row["scene_id"], row["split"], row["layout"], row["background"], objects,
                 row["relation"] or None, row["word"] or None)


def retrieval_tables(captions: dict[str, Facts], scenes: list[Scene], images: list[str]
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A split as a text-to-image retrieval problem: queries, images and relevance tables.

    Args:
        captions: every distinct true caption of the split -> its facts (the queries).
        scenes: the split's scenes (the image collection).
        images: each scene's image path, relative to the dataset folder.

    Returns:
        ``(queries, images, relevance)``: ``query_id``, ``caption``, ``seen_combination``,
        ``n_relevant``; ``image_id``, ``image``, ``seen_combination``, ``layout``; and one
        ``query_id``, ``image_id`` row per (caption, scene) where :func:`describes` holds.
    """
    query_ids = [f"q{index:05d}" for index in range(len(captions))]
    relevant = [(query_id, scene.scene_id) for query_id, facts in zip(query_ids, captions.values())
                for scene in scenes if describes(facts, scene)]
    relevance = pd.DataFrame(relevant, columns=["query_id", "image_id"])
    counts = relevance.groupby("query_id").size()
    queries = pd.DataFrame({"query_id": query_ids, "caption": list(captions),
                            "seen_combination": [facts.seen_combination for facts in captions.values()],
                            "n_relevant": counts.reindex(query_ids, fill_value=0).to_numpy()})
    image_table = pd.DataFrame({"image_id": [scene.scene_id for scene in scenes], "image": images,
                                "seen_combination": [scene.seen_combination for scene in scenes],
                                "layout": [scene.layout for scene in scenes]})
    return queries, image_table, relevance


def generate_scenes(root: str | Path = SCENES_DIR, n_train: int = SceneSizes.n_train,
                    n_val: int = SceneSizes.n_val, n_test: int = SceneSizes.n_test,
                    image_size: int = SceneSizes.image_size, seed: int = SceneSizes.seed,
                    captions_per_image: int = 4) -> Path:
    """Generate the captioned-scenes dataset (images, pairs tables, relevance tables).

    Args:
        root: output folder (created; existing files of the same names are overwritten).
        n_train: number of training scenes.
        n_val: number of validation scenes.
        n_test: number of test scenes; even-numbered ones contain a held-out combination.
        image_size: image side in pixels.
        seed: the seed; the same arguments always give byte-identical files.
        captions_per_image: true captions per scene (at most 6 distinct fact sets exist).

    Returns:
        ``root`` as a :class:`Path`.
    """
    root = Path(root)
    sizes = dict(zip(SPLITS, (n_train, n_val, n_test)))
    scene_rows = []
    for split_index, split in enumerate(SPLITS):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        pair_rows, scenes, images, facts_by_caption = [], [], [], {}
        for index in range(sizes[split]):
            rng = np.random.default_rng([seed, split_index, index])
            scene = sample_scene(f"{split}-{index:05d}", split, rng, unseen=split == "test" and index % 2 == 0)
            image = f"images/{split}/{scene.scene_id}.png"
            with atomic_path(root / image) as temp:
                draw_scene(scene, image_size, sign_x=int(rng.integers(1, 30))).save(temp, format="PNG", optimize=False)
            scenes.append(scene)
            images.append(image)
            scene_rows.append(_scene_rows(scene, image))
            for row in caption_scene(scene, rng, captions_per_image):
                facts = row.pop("facts")
                if row["match"]:
                    facts_by_caption.setdefault(row["caption"], facts)
                pair_rows.append({"image": image, **row, "split": split, "scene_id": scene.scene_id,
                                  "layout": scene.layout,
                                  "seen_combination": scene.seen_combination and facts.seen_combination})
        columns = ["image", "caption", "match", "split", "scene_id", "negative_kind", "seen_combination",
                   "twin_caption", "layout"]
        write_csv(root / f"pairs_{split}.csv", pd.DataFrame(pair_rows, columns=columns))
        if split in RETRIEVAL_SPLITS:
            tables = retrieval_tables(facts_by_caption, scenes, images)
            for name, table in zip(("queries", "images", "relevance"), tables):
                write_csv(root / f"{name}_{split}.csv", table)
    write_csv(root / "scenes.csv", pd.DataFrame(scene_rows))
    metadata = {"generator": "clipeval.data.scenes.generate_scenes", "seed": seed, "image_size": image_size,
                "sizes": sizes, "captions_per_image": captions_per_image, "colours": list(COLOURS),
                "shapes": list(SHAPES), "sizes_vocabulary": list(SIZES), "backgrounds": list(BACKGROUNDS),
                "words": list(WORDS), "relations": list(RELATIONS), "negative_kinds": list(NEGATIVE_KINDS),
                "held_out_combinations": [list(pair) for pair in HELD_OUT]}
    write_text(root / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    return root


def read_scenes_retrieval(root: str | Path, split: str) -> RetrievalSet:
    """Read a split's retrieval tables (every true caption as a query, all its scenes relevant).

    Args:
        root: the dataset folder written by :func:`generate_scenes`.
        split: ``val`` or ``test``.

    Returns:
        A :class:`clipeval.data.retrieval_sets.RetrievalSet` named ``scenes-<split>``; its queries
        keep ``seen_combination`` and ``n_relevant``.
    """
    root = Path(root)
    return read_retrieval_tables(root / f"queries_{split}.csv", root / f"images_{split}.csv",
                                 root / f"relevance_{split}.csv", name=f"scenes-{split}")


# --- object classes: the vocabulary of the pseudo-labelling study (notebook 07) ---------------------------------

def class_name(colour: str, shape: str) -> str:
    """An object class as the captions write it: ``"a red circle"``, ``"an orange square"``."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


SCENE_CLASSES = tuple(class_name(colour, shape) for colour in COLOURS for shape in SHAPES)


def scene_classes(scene: Scene) -> set[str]:
    """The classes of :data:`SCENE_CLASSES` present in a scene (one per distinct colour and shape drawn)."""
    return {class_name(obj.colour, obj.shape) for obj in scene.objects}


def scene_class_judge(root: str | Path = SCENES_DIR):
    """The truth for class queries: ``judge(text, image)`` is whether that scene holds that class.

    ``image`` is a reference as ``scenes.csv`` writes it (``images/<split>/<id>.png``), absolute or
    relative; only its split folder and file name are used.
    """
    table = pd.read_csv(Path(root) / "scenes.csv", keep_default_na=False)
    classes = {"/".join(Path(row["image"]).parts[-2:]): scene_classes(scene_from_row(row))
               for row in table.to_dict("records")}

    def judge(text: str, image: str) -> bool:
        return text in classes.get("/".join(Path(str(image)).parts[-2:]), set())

    return judge
