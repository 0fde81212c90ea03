"""Pieces every training loop here shares: the contrastive losses, AdamW with warm-up and cosine decay, determinism.

The dual encoder's training from scratch (:mod:`clipeval.train.dual`) and the fine-tuning of any
checkpoint (:mod:`clipeval.train.finetune`) both use them, so a loss or a schedule is written once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device):
    """Seed torch and turn on deterministic algorithms inside the block (warn only off the CPU)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def contrastive_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor,
                     negatives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over the batch's N x N similarity matrix (row i of ``images`` pairs with
    ``texts[i]``; all L2-normalised; ``logit_scale`` exponentiated).

    With ``negatives`` (NegCLIP, Yuksekgonul et al. 2023): ``(M, D)`` captions that describe none of the images,
    so each image sees N + M candidate captions; the text->image direction is unchanged.
    """
    logits = logit_scale * images @ texts.T
    labels = torch.arange(len(images), device=images.device)
    image_to_text = logits if negatives is None else torch.cat([logits, logit_scale * images @ negatives.T], dim=1)
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(logits.T, labels)) / 2


def sigmoid_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): each (image, caption) pair is a binary match; the
    ``(M, D)`` ``negatives`` are M more negative columns. Summed over all pairs and divided by N, as in the paper."""
    candidates = texts if negatives is None else torch.cat([texts, negatives])
    logits = logit_scale * images @ candidates.T + logit_bias
    labels = -torch.ones_like(logits)
    labels[:, :len(texts)] += 2 * torch.eye(len(images), len(texts), device=logits.device)
    return -F.logsigmoid(labels * logits).sum() / len(images)


def decays(name: str, parameter: torch.Tensor) -> bool:
    """Whether AdamW's weight decay applies: matrices, not biases, norms, embeddings' gains or the temperature."""
    return parameter.ndim >= 2 and "embedding" not in name


def build_optimizer(named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                    warmup_fraction: float, total_steps: int):
    """AdamW over ``named_parameters`` (frozen ones left out by the caller) and its schedule: linear warm-up over
    ``warmup_fraction`` of ``total_steps`` (at least one step), then cosine decay to 0.

    Returns:
        ``(optimizer, scheduler)``; call ``scheduler.step()`` after each ``optimizer.step()``.
    """
    named = list(named_parameters)
    decay = [parameter for name, parameter in named if decays(name, parameter)]
    no_decay = [parameter for name, parameter in named if not decays(name, parameter)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
