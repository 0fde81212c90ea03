"""The checkpoint catalogue: what each checkpoint the profiles name is, as data.

In the spirit of open_clip's ``pretrained.py``: one entry per checkpoint spec with its family,
a one-line description, whether its weights are random-init, where it comes from (paper or
model card) and, where known, the typical cosine range of matched image-caption pairs.
Plot labels and the RANDOM INIT marks read it (:func:`label_checkpoint`). A spec that is not
in the catalogue still loads and scores; it is described from its prefix, or from the
``clipeval_checkpoint.json`` that the project writes beside checkpoints it builds (the tiny
random ones), wherever they were saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipeval.atomic import write_text

CHECKPOINT_INFO_FILE = "clipeval_checkpoint.json"

FAMILIES = {"hf": "transformers", "open_clip": "open_clip", "baseline": "BERT + ResNet-50 baseline",
            "dual": "dual encoder trained here"}


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
        in_catalogue: False for a spec described only from its prefix or its info file.
    """

    spec: str
    family: str
    description: str
    random_init: bool = False
    source: str = ""
    matched_cosine: tuple[float, float] | None = None
    matched_cosine_source: str = ""
    in_catalogue: bool = True


CLIP_PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision"

CATALOGUE: dict[str, CheckpointInfo] = {info.spec: info for info in (
    CheckpointInfo("dual:outputs/offline/models/dual", "dual encoder",
                   "DistilBERT-architecture text tower + EfficientNet-B0 with attention pooling, trained from "
                   "scratch on the captioned scenes by `make model`",
                   source="this repository (README: The dual encoder)",
                   matched_cosine=(0.83, 0.97),
                   matched_cosine_source="measured: 5th-95th percentile of matched scenes test pairs "
                                         "(outputs/offline/score_summary.csv)"),
    CheckpointInfo("baseline:bert-resnet50-random", "baseline",
                   "BERT-base + ResNet-50 with random weights and an untrained projection: a floor, not a model",
                   random_init=True, source="this repository (clipeval.models.baseline)",
                   matched_cosine=(0.031, 0.056),
                   matched_cosine_source="measured: 5th-95th percentile of matched scenes test pairs "
                                         "(outputs/offline/score_summary.csv)"),
    CheckpointInfo("baseline:bert-resnet50", "baseline",
                   "pretrained bert-base-uncased + torchvision ResNet-50 IMAGENET1K_V1, joined by an "
                   "untrained fixed projection (no learned image-text alignment)",
                   source="Devlin et al. 2019 (BERT); He et al. 2016 (ResNet)"),
    CheckpointInfo("hf:openai/clip-vit-base-patch32", "CLIP",
                   "OpenAI CLIP ViT-B/32 (transformers); LAION-400M kept pairs with its cosine >= 0.30",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-base-patch32"),
    CheckpointInfo("open_clip:ViT-B-32@openai", "CLIP",
                   "OpenAI CLIP ViT-B/32 (open_clip); LAION-400M kept pairs with its cosine >= 0.30",
                   source=f"{CLIP_PAPER}; open_clip pretrained tag openai"),
    CheckpointInfo("hf:openai/clip-vit-base-patch16", "CLIP", "OpenAI CLIP ViT-B/16 (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-base-patch16"),
    CheckpointInfo("open_clip:RN50@openai", "CLIP", "OpenAI CLIP ResNet-50 (open_clip)",
                   source=f"{CLIP_PAPER}; open_clip pretrained tag openai"),
    CheckpointInfo("hf:openai/clip-vit-large-patch14", "CLIP", "OpenAI CLIP ViT-L/14 at 224 px (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-large-patch14"),
    CheckpointInfo("hf:openai/clip-vit-large-patch14-336", "CLIP", "OpenAI CLIP ViT-L/14 at 336 px (transformers)",
                   source=f"{CLIP_PAPER}; model card openai/clip-vit-large-patch14-336"),
    CheckpointInfo("open_clip:ViT-B-16-SigLIP@webli", "SigLIP",
                   "SigLIP ViT-B/16 trained on WebLI with a sigmoid loss and a learned logit bias (open_clip)",
                   source="Zhai et al. 2023, Sigmoid Loss for Language Image Pre-Training; open_clip tag webli"),
)}


def _info_file(spec: str) -> Path | None:
    """The ``clipeval_checkpoint.json`` of a local checkpoint: in its folder, or beside its weights file.

    Hub names (no such folder or file here) have none.
    """
    path = Path(spec.partition(":")[2].split("@", 1)[-1]).expanduser()
    folder = path if path.is_dir() else path.parent if path.is_file() else None
    candidate = folder / CHECKPOINT_INFO_FILE if folder is not None else None
    return candidate if candidate is not None and candidate.is_file() else None


def write_info_file(folder: str | Path, description: str, random_init: bool) -> Path:
    """Record what a checkpoint the project builds is, next to its files (read by :func:`describe_checkpoint`)."""
    path = Path(folder) / CHECKPOINT_INFO_FILE
    write_text(path, json.dumps({"description": description, "random_init": random_init}, indent=2) + "\n")
    return path


def describe_checkpoint(spec: str) -> CheckpointInfo:
    """The catalogue entry of ``spec``, or what its info file or prefix says of it.

    Args:
        spec: any checkpoint spec.

    Returns:
        A :class:`CheckpointInfo`; ``in_catalogue`` is False when the spec is not listed.
    """
    if spec in CATALOGUE:
        return CATALOGUE[spec]
    prefix = spec.partition(":")[0]
    family = FAMILIES.get(prefix, prefix)
    info_file = _info_file(spec)
    if info_file is not None:
        values = json.loads(info_file.read_text())
        return CheckpointInfo(spec, family, values.get("description", ""), bool(values.get("random_init", False)),
                              source=str(info_file), in_catalogue=False)
    return CheckpointInfo(spec, family, "", in_catalogue=False)


def is_random_init(spec: str) -> bool:
    """True for checkpoints whose weights are untrained, as the catalogue or their info file says."""
    return describe_checkpoint(spec).random_init


def label_checkpoint(spec: str) -> str:
    """The checkpoint's name as shown in tables and plots; random-init ones say so."""
    return f"{spec} [RANDOM INIT]" if is_random_init(spec) else spec
