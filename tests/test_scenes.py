"""The captioned-scenes generator: determinism, caption/scene consistency, hard negatives, relevance."""

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from clipeval.data.scenes import (
    BACKGROUNDS,
    COLOURS,
    COUNT_WORDS,
    HELD_OUT,
    PLURALS,
    RELATION_WORDS,
    SHAPES,
    SIZES,
    WORDS,
    Facts,
    Mention,
    Scene,
    SceneObject,
    caption_scene,
    describes,
    draw_scene,
    generate_scenes,
    read_scenes_retrieval,
    sample_scene,
    scene_from_row,
)

SIZES_ARGS = {"n_train": 40, "n_val": 16, "n_test": 24, "image_size": 64}


def tree_digest(root):
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), seed=3, **SIZES_ARGS)


def test_same_seed_gives_identical_bytes(scenes_root, tmp_path):
    again = generate_scenes(tmp_path / "again", seed=3, **SIZES_ARGS)
    assert tree_digest(scenes_root) == tree_digest(again)
    other = generate_scenes(tmp_path / "other", seed=4, **SIZES_ARGS)
    assert tree_digest(other) != tree_digest(scenes_root)


def test_layout_and_columns(scenes_root):
    for split in ("train", "val", "test"):
        pairs = pd.read_csv(scenes_root / f"pairs_{split}.csv", keep_default_na=False)
        assert {"image", "caption", "match", "split", "scene_id", "negative_kind", "seen_combination"} <= set(pairs)
        assert set(pairs["split"]) == {split}
        assert all((scenes_root / image).is_file() for image in pairs["image"])
        assert set(pairs.loc[pairs["match"], "negative_kind"]) == {""}
        assert set(pairs.loc[~pairs["match"], "negative_kind"]) <= {"colour", "relation", "count"}
        assert pairs[pairs["match"]].groupby("scene_id").size().min() >= 2  # several captions per image
    scenes = pd.read_csv(scenes_root / "scenes.csv", keep_default_na=False)
    assert scenes.groupby("split").size().to_dict() == {"train": 40, "val": 16, "test": 24}


def test_held_out_combinations_only_in_test(scenes_root):
    scenes = pd.read_csv(scenes_root / "scenes.csv", keep_default_na=False)
    assert scenes.loc[scenes["split"] != "test", "seen_combination"].all()
    test = scenes[scenes["split"] == "test"]
    assert test["seen_combination"].any() and not test["seen_combination"].all()
    held_out = [f"{colour} {shape}" for colour, shape in HELD_OUT] + [f"{c} {PLURALS[s]}" for c, s in HELD_OUT]
    for split in ("train", "val"):
        captions = pd.read_csv(scenes_root / f"pairs_{split}.csv", keep_default_na=False)["caption"]
        assert not any(phrase in caption for caption in captions for phrase in held_out)


def words_of(caption):
    return re.findall(r'"[A-Z]+"|[a-z]+', caption)


def read_scenes(root):
    table = pd.read_csv(root / "scenes.csv", keep_default_na=False)
    return {row["scene_id"]: scene_from_row(row) for row in table.to_dict("records")}


def assert_mentions_only_scene_attributes(caption, scene):
    words = words_of(caption)
    assert {w for w in words if w in COLOURS} <= {obj.colour for obj in scene.objects}
    shapes = {w for w in words if w in SHAPES} | {s for s in SHAPES if PLURALS[s] in words}
    assert shapes and shapes <= {obj.shape for obj in scene.objects}
    assert {w for w in words if w in SIZES} <= {obj.size for obj in scene.objects}
    if "background" in words:
        assert words[words.index("background") - 1] == scene.background
    assert [w.strip('"') for w in words if w.startswith('"')] in ([], [scene.word])


def test_true_captions_mention_only_the_scene_attributes(scenes_root):
    scenes = read_scenes(scenes_root)
    for split in ("train", "val", "test"):
        pairs = pd.read_csv(scenes_root / f"pairs_{split}.csv", keep_default_na=False)
        for row in pairs[pairs["match"]].itertuples():
            assert_mentions_only_scene_attributes(row.caption, scenes[row.scene_id])


RELATION_TOKENS = {word for phrases in RELATION_WORDS.values() for phrase in phrases for word in phrase.split()}
KIND_TOKENS = {"colour": set(COLOURS) | {"a", "an"}, "relation": RELATION_TOKENS,  # articles follow colours
               "count": set(COUNT_WORDS.values()) | {"an"} | set(SHAPES) | set(PLURALS.values())}


def test_hard_negatives_differ_from_their_twin_only_in_the_swapped_words(scenes_root):
    pairs = pd.concat([pd.read_csv(scenes_root / f"pairs_{s}.csv", keep_default_na=False) for s in ("train", "test")])
    negatives = pairs[~pairs["match"]]
    assert set(negatives["negative_kind"]) == {"colour", "relation", "count"}
    true_captions = set(zip(pairs.loc[pairs["match"], "scene_id"], pairs.loc[pairs["match"], "caption"]))
    for row in negatives.itertuples():
        assert (row.scene_id, row.twin_caption) in true_captions
        negative, twin = words_of(row.caption), words_of(row.twin_caption)
        assert len(negative) == len(twin)
        changed = [(a, b) for a, b in zip(negative, twin) if a != b]
        assert changed and all(a in KIND_TOKENS[row.negative_kind] and b in KIND_TOKENS[row.negative_kind]
                               for a, b in changed)


@pytest.mark.parametrize("split", ["train", "test"])
def test_facts_are_true_and_negatives_false_and_change_one_attribute(split):
    for index in range(60):
        rng = np.random.default_rng([11, index])
        scene = sample_scene(f"{split}-{index:05d}", split, rng, unseen=split == "test" and index % 2 == 0)
        rows = caption_scene(scene, rng)
        positives = {row["caption"]: row["facts"] for row in rows if row["match"]}
        assert all(describes(facts, scene) for facts in positives.values())
        for row in rows:
            if row["match"]:
                continue
            negative, twin = row["facts"], positives[row["twin_caption"]]
            assert not describes(negative, scene)
            assert (negative.background, negative.word) == (twin.background, twin.word)
            if row["negative_kind"] == "relation":
                assert negative.mentions == twin.mentions and negative.relation != twin.relation
            else:
                changed = "colour" if row["negative_kind"] == "colour" else "count"
                kept = "count" if changed == "colour" else "colour"
                assert negative.relation == twin.relation
                for attribute, same in ((changed, False), (kept, True), ("shape", True), ("size", True)):
                    values = [[getattr(m, attribute) for m in facts.mentions] for facts in (negative, twin)]
                    assert (values[0] == values[1]) is same


def test_describes_handles_counts_relations_and_unstated_attributes():
    scene = Scene("x", "test", "pair", "white", (SceneObject("circle", "red", "small", 10, 30),
                                                 SceneObject("square", "blue", "large", 50, 30)), "left of", "SALE")
    red, blue = Mention("red", "circle", None), Mention("blue", "square", None)
    assert describes(Facts((red,)), scene)
    assert describes(Facts((blue, red), "right of", "white", "SALE"), scene)
    assert not describes(Facts((red, blue), "right of"), scene)
    assert not describes(Facts((Mention("red", "circle", "large"),)), scene)
    assert not describes(Facts((Mention("red", "circle", None, 2),)), scene)
    assert not describes(Facts((red,), background="black"), scene)
    assert not describes(Facts((red,), word="STOP"), scene)


def test_objects_are_drawn_in_their_colour_at_their_place():
    for index in range(20):
        scene = sample_scene(f"train-{index:05d}", "train", np.random.default_rng([5, index]))
        for size in (64, 128):
            image = draw_scene(scene, size)
            assert image.size == (size, size) and image.mode == "RGB"
            for obj in scene.objects:
                assert image.getpixel((obj.x * size // 64, obj.y * size // 64)) == COLOURS[obj.colour]
        assert scene.background in BACKGROUNDS and scene.word in (None, *WORDS)


def test_relevance_includes_own_image_and_only_described_scenes(scenes_root):
    dataset = read_scenes_retrieval(scenes_root, "test")
    scenes = read_scenes(scenes_root)
    captions, scene_ids = dataset.queries["text"].tolist(), dataset.images["image_id"].tolist()
    relevant = {(captions[q], scene_ids[i]) for q, i in dataset.relevant}
    for caption, scene_id in relevant:
        assert_mentions_only_scene_attributes(caption, scenes[scene_id])
    pairs = pd.read_csv(scenes_root / "pairs_test.csv", keep_default_na=False)
    matches = pairs[pairs["match"]]
    assert sorted(captions) == sorted(set(matches["caption"])) and len(scene_ids) == 24
    assert set(zip(matches["caption"], matches["scene_id"])) <= relevant
    assert (dataset.queries["n_relevant"] > 1).any()  # some captions describe several scenes
    assert dataset.queries["n_relevant"].sum() == len(relevant)
    seen = dataset.queries["seen_combination"]
    assert seen.any() and not seen.all()
