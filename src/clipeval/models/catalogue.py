"""The checkpoint catalogue: what each checkpoint the profiles name is, as data.

In the spirit of open_clip's ``pretrained.py``: one entry per checkpoint spec with its family,
a one-line description, whether its weights are random-init, where it comes from (paper or
model card), where known the typical cosine range of matched image-caption pairs and, for real
checkpoints, their published zero-shot retrieval numbers on the standard benchmarks
(:data:`clipeval.data.benchmarks.BENCHMARKS`) with their source (:class:`PublishedRetrieval`,
:func:`published_retrieval`). Published numbers are read from copies of their public tables kept
in ``published_tables/`` (each CSV beside a ``.source.json`` naming its repository, file and commit),
never typed here; a checkpoint without any (the BERT + ResNet-50 baseline) has none.
Plot labels and the RANDOM INIT marks read it (:func:`label_checkpoint`). A spec that is not
in the catalogue still loads and scores; it is described from its prefix, or from the
``clipeval_checkpoint.json`` that the project writes beside checkpoints it builds (the tiny
random ones), wherever they were saved.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from clipeval.atomic import write_text
from clipeval.data.benchmarks import COCO_5K, FLICKR_1K
from clipeval.models.hub_mirror import MIRROR_NOTE, is_mirrored
from clipeval.models.registry import checkpoint_family

CHECKPOINT_INFO_FILE = "clipeval_checkpoint.json"

PUBLISHED_KS = (1, 5, 10)


@dataclass(frozen=True)
class PublishedRetrieval:
    """A checkpoint's published HitRate@1/5/10 on one benchmark and direction, in percent.

    HitRate@k is what the CLIP paper, CLIP_benchmark and open_clip call recall@k: the share
    of queries with a relevant item in the top k (text->image: the caption's image; image->text:
    any of the image's captions).

    Attributes:
        benchmark: a key of :data:`clipeval.data.benchmarks.BENCHMARKS`.
        direction: ``text_to_image`` or ``image_to_text``.
        hit_rate: HitRate@1, @5 and @10 (percent), as published.
        source: where the numbers are published (document, table and row).
    """

    benchmark: str
    direction: str
    hit_rate: tuple[float, float, float]
    source: str


# open_clip's retrieval results table (CLIP_benchmark, Karpathy test splits): the rows of the catalogue's
# checkpoints, copied verbatim. Its "image retr." columns are text->image, its "text retr." columns image->text;
# values are fractions there (4 decimals), percent here (x 100: 2 decimals, nothing rounded away).
OPEN_CLIP_RESULTS = Path(__file__).parent / "published_tables" / "openclip_retrieval_results.csv"
OPEN_CLIP_COLUMNS = {(COCO_5K, "text_to_image"): "MSCOCO image retr.",
                     (COCO_5K, "image_to_text"): "MSCOCO text retr.",
                     (FLICKR_1K, "text_to_image"): "Flickr image retr.",
                     (FLICKR_1K, "image_to_text"): "Flickr text retr."}


@functools.cache
def read_published_table(path: Path) -> tuple[dict[str, dict[str, str]], dict]:
    """A copied public table: its rows by ``name,pretrained`` and its ``.source.json`` (repository, file, commit)."""
    with path.open(newline="") as handle:
        rows = {f"{row['name']},{row['pretrained']}": row for row in csv.DictReader(handle)}
    return rows, json.loads(path.with_suffix(".source.json").read_text())


def _open_clip_row(row: str, note: str = "") -> tuple[PublishedRetrieval, ...]:
    """The four published rows (COCO and Flickr, both directions) of one line of open_clip's retrieval table."""
    rows, origin = read_published_table(OPEN_CLIP_RESULTS)
    if row not in rows:
        raise ValueError(f"{row} is not among the rows copied into {OPEN_CLIP_RESULTS.name}")
    source = (f"open_clip {origin['file']} (github.com/{origin['repository']}, commit {origin['commit']}; "
              f"CLIP_benchmark zero-shot retrieval), row {row}{note}")
    return tuple(PublishedRetrieval(benchmark, direction,
                                    tuple(round(float(rows[row][f"{column} R@{k}"]) * 100, 2) for k in PUBLISHED_KS),
                                    source)
                 for (benchmark, direction), column in OPEN_CLIP_COLUMNS.items())


# open_clip's zero-shot classification table (CLIP_benchmark): the same checkpoints' rows, copied verbatim; its
# ImageNet 1k, CIFAR-10 and CIFAR-100 columns are top-1 accuracy, fractions there, percent here
OPEN_CLIP_ZERO_SHOT_RESULTS = Path(__file__).parent / "published_tables" / "openclip_results.csv"
OPEN_CLIP_ZERO_SHOT_COLUMNS = {"imagenet1k": "ImageNet 1k", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_CITED_ROW = re.compile(r", row ([^;,]+,[^;,]+?)(?:;|$)")  # the open_clip row a PublishedRetrieval's source cites


SAME_WEIGHTS = "; the transformers checkpoint holds the same OpenAI weights"
VIT_B_32_OPENAI = "ViT-B-32,openai"


@dataclass(frozen=True)
class CheckpointInfo:
    """What the catalogue knows of one checkpoint.

    Attributes:
        spec: the checkpoint spec.
        family: model family (``CLIP``, ``SigLIP``, ``baseline``, ``dual encoder``...).
        description: one line on what it is.
        random_init: True when its weights are untrained (scores mean nothing about the data).
        source: the paper or model card it comes from.
        matched_cosine: typical (low, high) cosine of matched pairs, or None when not known.
        matched_cosine_source: where that range comes from.
        published: its published retrieval numbers (none where no source has them).
        in_catalogue: False for a spec described only from its prefix or its info file.
        fine_tuned_from: the base checkpoint spec of a model fine-tuned here (``clipeval finetune``),
            as its info file records it; empty otherwise.
    """

    spec: str
    family: str
    description: str
    random_init: bool = False
    source: str = ""
    matched_cosine: tuple[float, float] | None = None
    matched_cosine_source: str = ""
    published: tuple[PublishedRetrieval, ...] = ()
    in_catalogue: bool = True
    fine_tuned_from: str = ""


CLIP_PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision"

CATALOGUE: dict[str, CheckpointInfo] = {info.spec: info for info in (
    CheckpointInfo("dual:outputs/offline/models/dual", "dual encoder",
                   "DistilBERT-architecture text tower + EfficientNet-B0 with attention pooling, trained from "
                   "scratch on the captioned scenes by `make model`",
                   source="this repository (docs/dual-encoder.md)",
                   matched_cosine=(0.83, 0.97),
                   matched_cosine_source="measured: 5th-95th percentile of matched scenes test pairs "
                                         "(score_summary.csv of the offline run)"),
    CheckpointInfo("baseline:bert-resnet50-random", "baseline",
                   "BERT-base + ResNet-50 with random weights and an untrained projection: a floor, not a model",
                   random_init=True, source="this repository (clipeval.models.baseline)",
                   matched_cosine=(0.031, 0.056),
                   matched_cosine_source="measured: 5th-95th percentile of matched scenes test pairs "
                                         "(score_summary.csv of the offline run)"),
    CheckpointInfo("baseline:bert-resnet50", "baseline",
                   "pretrained bert-base-uncased + torchvision ResNet-50 IMAGENET1K_V1, joined by an "
                   "untrained fixed projection (no learned image-text alignment)",
                   source="Devlin et al. 2019 (BERT); He et al. 2016 (ResNet)"),
    CheckpointInfo("hf:openai/clip-vit-base-patch32", "CLIP",
                   "OpenAI CLIP ViT-B/32 (transformers); LAION-400M kept pairs with its cosine >= 0.30",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-base-patch32",
                   published=_open_clip_row(VIT_B_32_OPENAI, note=SAME_WEIGHTS)),
    CheckpointInfo("open_clip:ViT-B-32@openai", "CLIP",
                   "OpenAI CLIP ViT-B/32 (open_clip); LAION-400M kept pairs with its cosine >= 0.30",
                   source=f"{CLIP_PAPER}; open_clip pretrained tag openai",
                   published=_open_clip_row(VIT_B_32_OPENAI)),
    CheckpointInfo("hf:openai/clip-vit-base-patch16", "CLIP", "OpenAI CLIP ViT-B/16 (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-base-patch16",
                   published=_open_clip_row("ViT-B-16,openai", note=SAME_WEIGHTS)),
    CheckpointInfo("open_clip:RN50@openai", "CLIP", "OpenAI CLIP ResNet-50 (open_clip)",
                   source=f"{CLIP_PAPER}; open_clip pretrained tag openai",
                   published=_open_clip_row("RN50,openai")),
    CheckpointInfo("hf:openai/clip-vit-large-patch14", "CLIP", "OpenAI CLIP ViT-L/14 at 224 px (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-large-patch14",
                   published=_open_clip_row("ViT-L-14,openai", note=SAME_WEIGHTS)),
    CheckpointInfo("hf:openai/clip-vit-large-patch14-336", "CLIP", "OpenAI CLIP ViT-L/14 at 336 px (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-large-patch14-336",
                   published=_open_clip_row("ViT-L-14-336,openai", note=SAME_WEIGHTS)),
    CheckpointInfo("hf:facebook/metaclip-b32-400m", "MetaCLIP",
                   "Meta's MetaCLIP ViT-B/32 trained on 400M pairs curated by CLIP's metadata distribution "
                   "(transformers); the other family the similarity-calculator write-up names to try",
                   source="Xu et al. 2024, Demystifying CLIP Data (ICLR); model card facebook/metaclip-b32-400m",
                   published=_open_clip_row("ViT-B-32-quickgelu,metaclip_400m",
                                            note="; the transformers checkpoint is converted from the same MetaCLIP "
                                                 "release (b32_400m.pt)")),
    CheckpointInfo("open_clip:ViT-B-16-SigLIP@webli", "SigLIP",
                   "SigLIP ViT-B/16 trained on WebLI with a sigmoid loss and a learned logit bias (open_clip)",
                   source="Zhai et al. 2023, Sigmoid Loss for Language Image Pre-Training; open_clip tag webli",
                   published=_open_clip_row("ViT-B-16-SigLIP,webli")),
)}


def _info_file(spec: str) -> Path | None:
    """The ``clipeval_checkpoint.json`` of a local checkpoint: in its folder, or beside its weights file.

    Hub names (no such folder or file here) have none.
    """
    path = Path(spec.partition(":")[2].split("@", 1)[-1]).expanduser()
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    candidate = folder / CHECKPOINT_INFO_FILE if folder is not None else None
    return candidate if candidate is not None and candidate.is_file() else None


def write_info_file(folder: str | Path, description: str, random_init: bool, fine_tuned_from: str | None = None,
                    provenance: dict | None = None) -> Path:
    """Record what a checkpoint the project builds is, next to its files (read by :func:`describe_checkpoint`).

    Args:
        folder: the checkpoint's folder (or the folder of its weights file).
        description: one line on what it is.
        random_init: whether its weights say nothing about any data.
        fine_tuned_from: the base checkpoint spec of a fine-tuned model.
        provenance: how it was made (base weights hash, data fingerprint, settings), kept verbatim.
    """
    path = Path(folder) / CHECKPOINT_INFO_FILE
    values = {"description": description, "random_init": random_init}
    if fine_tuned_from:
        values["fine_tuned_from"] = fine_tuned_from
    if provenance is not None:
        values["provenance"] = provenance
    write_text(path, json.dumps(values, indent=2, default=str) + "\n")
    return path


def describe_checkpoint(spec: str) -> CheckpointInfo:
    """The catalogue entry of ``spec``, or what its info file or prefix says of it.

    Under the rehearsal hub mirror (:func:`clipeval.models.hub_mirror.is_mirrored`) a hub
    checkpoint is marked random-init and its description says so; its published numbers stay,
    so that the deviation check runs against them.

    Args:
        spec: any checkpoint spec.

    Returns:
        A :class:`CheckpointInfo`; ``in_catalogue`` is False when the spec is not listed.
    """
    info = _described(spec)
    if is_mirrored(spec):
        return replace(info, random_init=True, description=f"{MIRROR_NOTE.upper()}: {info.description}".rstrip(": "))
    return info


def _info_values(spec: str) -> dict | None:
    """What the spec's info file records, or ``None`` when it has none."""
    info_file = _info_file(spec)
    return None if info_file is None else {**json.loads(info_file.read_text()), "source": str(info_file)}


def _described(spec: str) -> CheckpointInfo:
    if spec in CATALOGUE:
        return CATALOGUE[spec]
    family = checkpoint_family(spec.partition(":")[0]).description
    values = _info_values(spec)
    if values is not None:
        return CheckpointInfo(spec, family, values.get("description", ""), bool(values.get("random_init", False)),
                              source=values["source"], in_catalogue=False,
                              fine_tuned_from=values.get("fine_tuned_from", ""))
    return CheckpointInfo(spec, family, "", in_catalogue=False)


def is_random_init(spec: str) -> bool:
    """True for checkpoints whose weights are untrained, as the catalogue, their info file or the mirror says.

    Unlike :func:`describe_checkpoint` it never imports the spec's family (and so no model library).
    """
    if spec in CATALOGUE:
        random_init = CATALOGUE[spec].random_init
    else:
        random_init = bool((_info_values(spec) or {}).get("random_init", False))
    return random_init or is_mirrored(spec)


def label_checkpoint(spec: str) -> str:
    """The checkpoint's name as shown in tables and plots; random-init ones say so."""
    return f"{spec} [RANDOM INIT]" if is_random_init(spec) else spec


def published_retrieval(specs: list[str] | None = None) -> pd.DataFrame:
    """The catalogue's published retrieval numbers as a long table (all checkpoints, or ``specs``).

    Returns:
        One row per checkpoint x benchmark x direction x k: ``checkpoint``, ``dataset`` (the
        benchmark), ``direction``, ``k``, ``published`` (HitRate@k in percent) and ``source``.
    """
    specs = list(CATALOGUE) if specs is None else specs
    rows = [{"checkpoint": spec, "dataset": entry.benchmark, "direction": entry.direction, "k": k,
             "published": value, "source": entry.source}
            for spec in specs for entry in describe_checkpoint(spec).published
            for k, value in zip(PUBLISHED_KS, entry.hit_rate, strict=True)]
    return pd.DataFrame(rows, columns=["checkpoint", "dataset", "direction", "k", "published", "source"])


def published_zero_shot(specs: list[str] | None = None) -> pd.DataFrame:
    """The catalogue's published zero-shot top-1 accuracy on ImageNet-1k, CIFAR-10 and CIFAR-100, as a long table.

    A checkpoint's numbers are read from the row of open_clip's results table that its published retrieval
    numbers cite (the same weights evaluated by CLIP_benchmark); a checkpoint without one has none.

    Returns:
        One row per checkpoint x dataset: ``checkpoint``, ``dataset`` (``imagenet1k``, ``cifar10``,
        ``cifar100``), ``metric`` (``top1_accuracy``), ``published`` (percent) and ``source``.
    """
    table, origin = read_published_table(OPEN_CLIP_ZERO_SHOT_RESULTS)
    rows = []
    for spec in list(CATALOGUE) if specs is None else specs:
        cited = {match.group(1): entry.source[match.end(1):] for entry in describe_checkpoint(spec).published
                 for match in [_CITED_ROW.search(entry.source)] if match}  # row -> the citation's note
        for row in sorted(cited.keys() & table.keys()):
            source = (f"open_clip {origin['file']} (github.com/{origin['repository']}, commit {origin['commit']}; "
                      f"CLIP_benchmark zero-shot classification), row {row}{cited[row]}")
            rows += [{"checkpoint": spec, "dataset": dataset, "metric": "top1_accuracy",
                      "published": round(float(table[row][column]) * 100, 2), "source": source}
                     for dataset, column in OPEN_CLIP_ZERO_SHOT_COLUMNS.items()]
    return pd.DataFrame(rows, columns=["checkpoint", "dataset", "metric", "published", "source"])
