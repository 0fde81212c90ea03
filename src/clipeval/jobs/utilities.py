"""The data and checkpoint utilities: the synthetic scenes, training on them, shards, tiny and mirrored checkpoints."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clipeval.data.options import SceneSizes, SourceOptions
from clipeval.embed.options import progress_option
from clipeval.jobs.flags import options_from
from clipeval.jobs.job import Command, Job
from clipeval.paths import (
    CHALLENGE_DIR,
    DUAL_MODEL_DIR,
    REHEARSAL_HUB_DIR,
    SCENE_CLASSIFIER_DIR,
    SCENES_DIR,
    TINY_CHECKPOINTS_DIR,
)
from clipeval.train.options import ClassifierConfig, TrainConfig


@dataclass(frozen=True)
class ScenesFolder:
    """Where ``make-scenes`` writes the scenes."""

    out: Path = field(default=SCENES_DIR, metadata={"help": "the scenes folder"})


@dataclass(frozen=True)
class TrainFolders:
    """The scenes a model trains on and the folder it is saved to."""

    scenes: Path = field(default=SCENES_DIR, metadata={"help": "folder written by `clipeval make-scenes`"})
    out: Path = field(default=DUAL_MODEL_DIR, metadata={"help": "model folder"})


@dataclass(frozen=True)
class ClassifierFolders:
    """The scenes the scene classifier trains on and the folder it is saved to."""

    scenes: Path = field(default=SCENES_DIR, metadata={"help": "folder written by `clipeval make-scenes`"})
    out: Path = field(default=SCENE_CLASSIFIER_DIR, metadata={"help": "model folder"})
    progress: bool = progress_option()


@dataclass(frozen=True)
class ShardWriting:
    """The pairs table ``make-shards`` splits and the shards it writes."""

    pairs: str = field(metadata={"required": True, "help": "a pairs table whose image column holds local paths"})
    out: Path = field(metadata={"required": True, "help": "the shards' folder"})
    shards: int = field(default=4, metadata={"help": "how many shards"})
    format: str = field(default="tar", metadata={"choices": ("tar", "parquet", "csv"), "help": "shard format"})


@dataclass(frozen=True)
class CheckpointQuery:
    """The checkpoints ``clipeval checkpoints`` describes."""

    spec: tuple[str, ...] = field(default=(), metadata={
        "positional": True, "nargs": "*", "help": "checkpoint specs to describe (default: the whole catalogue)"})


@dataclass(frozen=True)
class TinyCheckpoints:
    """Where the tiny random checkpoints go and their seed."""

    out: Path = field(default=TINY_CHECKPOINTS_DIR, metadata={"help": "their folder"})
    seed: int = 0


@dataclass(frozen=True)
class MirrorBuild:
    """The rehearsal hub mirror: its folder and what it holds."""

    out: Path = field(default=REHEARSAL_HUB_DIR, metadata={"help": "mirror folder (hf/ and torch/ inside)"})
    only: tuple[str, ...] | None = field(default=None, metadata={
        "repeat": True, "help": "build only this repository or torch file (repeatable; default: all)"})
    progress: bool = progress_option()


@dataclass(frozen=True)
class ChallengeFolder:
    """Where ``challenge-set`` writes the embedded challenge set."""

    out: Path = field(default=CHALLENGE_DIR, metadata={"help": "its folder"})


def _scenes(args: argparse.Namespace) -> None:
    from clipeval.data.scenes import generate_scenes

    print(generate_scenes(options_from(args, ScenesFolder).out, **asdict(options_from(args, SceneSizes))))


def _train(args: argparse.Namespace) -> None:
    from clipeval.train.dual import train_dual

    folders = options_from(args, TrainFolders)
    folder = train_dual(folders.scenes, folders.out, config=options_from(args, TrainConfig))
    print(f"saved dual encoder -> dual:{folder}")


def _train_scene_classifier(args: argparse.Namespace) -> None:
    from clipeval.train.scene_classifier import train_scene_classifier

    folders = options_from(args, ClassifierFolders)
    folder = train_scene_classifier(folders.scenes, folders.out, config=options_from(args, ClassifierConfig),
                                    progress=folders.progress)
    print(f"saved scene classifier -> {folder}")


def _make_shards(args: argparse.Namespace) -> None:
    from clipeval.data.shards import write_shards
    from clipeval.data.sources import read_pairs

    writing, reading = options_from(args, ShardWriting), options_from(args, SourceOptions)
    pairs = read_pairs(writing.pairs, **asdict(reading))
    for path in write_shards(pairs, writing.out, writing.shards, writing.format, reading.image_column,
                             reading.caption_column):
        print(path)


def _checkpoints(args: argparse.Namespace) -> None:
    from clipeval.models.catalogue import CATALOGUE, describe_checkpoint

    for spec in options_from(args, CheckpointQuery).spec or list(CATALOGUE):
        info = describe_checkpoint(spec)
        cosine = (f"{info.matched_cosine[0]:.2f}-{info.matched_cosine[1]:.2f} ({info.matched_cosine_source})"
                  if info.matched_cosine else "not known")
        print(f"{spec}\n  family       {info.family}{'  [RANDOM INIT]' if info.random_init else ''}"
              f"{'' if info.in_catalogue else '  (not in the catalogue)'}\n"
              f"  description  {info.description or '-'}\n  source       {info.source or '-'}\n"
              f"  matched cos  {cosine}")
        for entry in info.published:  # published retrieval HitRate@1/5/10 (percent), with their source
            values = " / ".join(f"{value:.1f}" for value in entry.hit_rate)
            print(f"  published    {entry.benchmark} {entry.direction} R@1/5/10 {values}")
        if info.published:
            print(f"  published by {info.published[0].source}")
        if info.fine_tuned_from:
            print(f"  fine-tuned   from {info.fine_tuned_from}")


def _tiny_checkpoints(args: argparse.Namespace) -> None:
    from clipeval.models.tiny import build_tiny_checkpoints

    tiny = options_from(args, TinyCheckpoints)
    for name, spec in build_tiny_checkpoints(tiny.out, tiny.seed).items():
        print(f"{name:<15} {spec}")


def _rehearsal_hub(args: argparse.Namespace) -> None:
    from clipeval.models.hub_mirror import MIRROR_FILE, mirror_env
    from clipeval.rehearsal.mirror import build_mirror

    build = options_from(args, MirrorBuild)
    out = build_mirror(build.out, only=list(build.only) if build.only else None, progress=build.progress)
    held = json.loads((out / "hf" / MIRROR_FILE).read_text())
    print(f"rehearsal hub mirror -> {out}: {len(held['models'])} models, {len(held['datasets'])} datasets, "
          f"{len(held['torch_files'])} torch weight file(s); random weights under real names")
    print("use it: " + " ".join(f"{name}={value}" for name, value in mirror_env(out).items()))


def _challenge_set(args: argparse.Namespace) -> None:
    from clipeval.data.challenge import build_challenge_set

    print(build_challenge_set(options_from(args, ChallengeFolder).out))


UTILITIES = Job("utilities", commands=(
    Command("make-scenes", "generate the captioned-scenes dataset (deterministic)", (ScenesFolder, SceneSizes),
            _scenes, example="python -m clipeval make-scenes --out data/generated/scenes --seed 0"),
    Command("train", "train the dual encoder on the scenes; saves a dual: folder", (TrainFolders, TrainConfig),
            _train, example="python -m clipeval train --scenes data/generated/scenes "
                            "--out outputs/offline/models/dual --epochs 3"),
    Command("train-scene-classifier", "train the small timm classifier of the scenes (a labeller for notebook 07)",
            (ClassifierFolders, ClassifierConfig), _train_scene_classifier,
            example="python -m clipeval train-scene-classifier --scenes data/generated/scenes --epochs 2"),
    Command("make-shards", "split a pairs table into shard files (tar/parquet/csv), each image once with its "
                           "captions, every row with source_row and source_image", (ShardWriting, SourceOptions),
            _make_shards, example="python -m clipeval make-shards --pairs data/generated/scenes/pairs_test.csv "
                                  "--out outputs/shards --shards 8 --format tar"),
    Command("checkpoints", "print the checkpoint catalogue (or what is known of SPEC)", (CheckpointQuery,),
            _checkpoints, example="python -m clipeval checkpoints hf:openai/clip-vit-base-patch32"),
    Command("tiny-checkpoints", "build tiny random checkpoints in the real formats", (TinyCheckpoints,),
            _tiny_checkpoints, example="python -m clipeval tiny-checkpoints --out data/checkpoints/tiny-random"),
    Command("rehearsal-hub", "build the rehearsal hub mirror: every repository the paper profile needs, random, "
                             "under its real name", (MirrorBuild,), _rehearsal_hub,
            example="python -m clipeval rehearsal-hub --only openai/clip-vit-base-patch32"),
    Command("challenge-set", "write the embedded challenge set to data/", (ChallengeFolder,), _challenge_set,
            example="python -m clipeval challenge-set --out data/generated/challenge"),
))
