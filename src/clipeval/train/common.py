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
    """CLIP's symmetric cross-entropy over the batch's N x N similarity matrix.

    With ``negatives`` (NegCLIP, Yuksekgonul et al. 2023), the image->text direction also
    competes against M extra captions that match no image of the batch, so each image sees
    N + M candidate captions; the text->image direction is unchanged.

    Args:
        images: ``(N, D)`` L2-normalised image embeddings; row i pairs with ``texts[i]``.
        texts: ``(N, D)`` L2-normalised text embeddings.
        logit_scale: the (exponentiated) temperature.
        negatives: optional ``(M, D)`` L2-normalised embeddings of captions that describe none
            of the images (hard negatives).

    Returns:
        The mean of the image->text and text->image cross-entropies (a scalar).
    """
    logits = logit_scale * images @ texts.T
    labels = torch.arange(len(images), device=images.device)
    image_to_text = logits if negatives is None else torch.cat([logits, logit_scale * images @ negatives.T], dim=1)
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(logits.T, labels)) / 2


def sigmoid_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor,
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): each (image, caption) pair is a binary match.

    Args:
        images: ``(N, D)`` L2-normalised image embeddings; row i pairs with ``texts[i]``.
        texts: ``(N, D)`` L2-normalised text embeddings.
        logit_scale: the (exponentiated) temperature.
        logit_bias: the learned bias.
        negatives: optional ``(M, D)`` captions that match no image (hard negatives): M more
            negative columns.

    Returns:
        The summed log-sigmoid loss over all pairs, divided by N (as in the paper).
    """
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
    """AdamW over the given parameters and its schedule: linear warm-up, then cosine decay to 0.

    Args:
        named_parameters: ``(name, parameter)`` pairs to optimise (frozen ones left out by the caller).
        lr: the peak learning rate.
        weight_decay: AdamW's decay, for the parameters :func:`decays` picks.
        warmup_fraction: share of ``total_steps`` spent warming up (at least one step).
        total_steps: optimizer steps in the run.

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
