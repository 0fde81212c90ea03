"""The mirror's model repositories: every checkpoint family's (their ``mirror_builders``) and the labellers'.

The labellers' stand-ins are built here: timm's NoisyStudent EfficientNet-B4 (full size,
``timm.models.save_for_hf``) and a small ViT-GPT2 captioner with a byte-level BPE (GPT-2 style)
tokenizer. Nothing here is trained: every output made from these weights means nothing about the data.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from clipeval.models.registry import CHECKPOINT_FAMILIES, checkpoint_family
from clipeval.models.stand_ins import SEED, caption_words


def _drop_info_file(folder: Path) -> None:
    """The tiny builders mark their folders; a mirrored repository holds only what the real one does."""
    from clipeval.models.catalogue import CHECKPOINT_INFO_FILE

    (folder / CHECKPOINT_INFO_FILE).unlink(missing_ok=True)


def timm_classifier(folder: Path, name: str) -> None:
    """A timm hub repository for the pretrained ``name`` (``arch.tag``), full size, via ``save_for_hf``."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(SEED)
    model = timm.create_model(name, pretrained=False)
    save_for_hf(model.half(), folder, safe_serialization=True)


def gpt2_style_tokenizer(folder: Path):
    """A byte-level BPE tokenizer as GPT-2's (``<|endoftext|>`` as start, end and unknown token).

    Trained on the caption words (GPT-2's own merges cannot be fetched offline); its ``vocab.json``
    and ``merges.txt`` are written to ``folder`` and read back by ``GPT2Tokenizer``.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Tokenizer

    corpus = [" ".join(caption_words())] * 4 + list(string.ascii_letters + string.digits + string.punctuation)
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(corpus, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = trained.save_model(str(folder))
    return GPT2Tokenizer(vocab=vocab, merges=merges)


def vit_gpt2_captioner(folder: Path) -> None:
    """``nlpconnect/vit-gpt2-image-captioning``: a small ViT + GPT-2 at 224 px with a GPT-2 style tokenizer."""
    from clipeval.models.tiny import build_tiny_captioner

    build_tiny_captioner(folder, SEED, tokenizer=gpt2_style_tokenizer(folder), image_size=224, patch_size=16)
    _drop_info_file(folder)


def model_builders() -> dict[str, Callable[[Path], None]]:
    """Every model repository of the mirror: hub ``org/name`` -> builder of its folder."""
    from clipeval.labels.captioner import DEFAULT_MODEL as CAPTIONER
    from clipeval.labels.classifier import DEFAULT_MODEL as CLASSIFIER

    builders: dict[str, Callable[[Path], None]] = {CAPTIONER: vit_gpt2_captioner,
                                                     timm_repo(CLASSIFIER): partial(timm_classifier, name=CLASSIFIER)}
    for prefix in CHECKPOINT_FAMILIES:
        builders.update(checkpoint_family(prefix).mirror_builders())
    return builders


def timm_repo(name: str) -> str:
    """The hub repository timm downloads the pretrained ``name`` from."""
    import timm

    return timm.models.get_pretrained_cfg(name).hf_hub_id.rstrip("/")
