"""Low-rank adapters (LoRA, Hu et al. 2021) on the attention projections of any checkpoint family.

An adapter is a ``torch.nn.utils.parametrize`` parametrization of a weight matrix: the frozen
weight ``W`` is read as ``W + (alpha / rank) * B @ A`` with ``A`` ``(rank, in)`` initialised like
a linear layer and ``B`` ``(out, rank)`` at zero, so training starts from the base model exactly.
A parametrization works on any weight the model reads by attribute, which covers both forms
attention projections take in the three families:

* ``nn.Linear`` query/key/value/output projections: transformers CLIP and SigLIP
  (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), the dual encoder's DistilBERT
  (``q_lin``, ``k_lin``, ``v_lin``, ``out_lin``) and its attention pooling (``q_proj``,
  ``k_proj``, ``v_proj``, ``c_proj``);
* ``nn.MultiheadAttention`` (open_clip's towers): its fused ``in_proj_weight`` (query, key
  and value stacked, one adapter over the stack) and its ``out_proj``.

peft's LoRA targets ``nn.Linear`` modules and handles ``nn.MultiheadAttention`` only
experimentally, and it is not a dependency here; this module is the ~80 lines the three
families need. :func:`merge_adapters` folds every adapter into its weight, so a saved
checkpoint is a plain model of its family and loads with its usual spec.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "c_proj", "q_lin", "k_lin", "v_lin", "out_lin")


class LowRankDelta(nn.Module):
    """The parametrization ``W -> W + scale * up @ down`` of one weight matrix.

    Args:
        out_features: rows of the weight.
        in_features: columns of the weight.
        rank: the adapter's rank.
        alpha: the scale numerator (``scale = alpha / rank``).
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.up @ self.down).to(weight.dtype)


def attention_weights(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """The attention projection weights of a model: ``(module, attribute, qualified name)``.

    Only modules inside an attention block are taken for the ambiguous names: a ``c_proj``
    counts when its parent is an attention pooling (it has ``q_proj``), not an MLP's output.
    """
    found = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            found.append((module, "in_proj_weight", f"{name}.in_proj_weight"))
            continue
        leaf = name.rsplit(".", 1)[-1]
        if not isinstance(module, nn.Linear) or leaf not in LINEAR_TARGETS:
            continue
        parent = modules[name.rsplit(".", 1)[0]] if "." in name else model
        if leaf == "c_proj" and not hasattr(parent, "q_proj"):
            continue
        found.append((module, "weight", f"{name}.weight"))
    return found


def add_adapters(model: nn.Module, rank: int = 8, alpha: float = 16.0) -> list[str]:
    """Freeze every parameter of ``model`` and add a trainable adapter to each attention projection.

    Args:
        model: the model (changed in place).
        rank: adapter rank.
        alpha: adapter scale numerator.

    Returns:
        The qualified names of the adapted weights.

    Raises:
        ValueError: the model has no attention projection this module knows.
    """
    targets = attention_weights(model)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no attention projection to adapt "
                         f"(looked for nn.MultiheadAttention and Linear layers named {', '.join(LINEAR_TARGETS)})")
    model.requires_grad_(False)
    for module, attribute, _ in targets:
        weight = getattr(module, attribute)
        delta = LowRankDelta(weight.shape[0], weight.shape[1], rank, alpha).to(weight.device)
        parametrize.register_parametrization(module, attribute, delta)
    return [name for _, _, name in targets]


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its weight (the model is a plain one again); returns how many were merged."""
    merged = 0
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for attribute in list(module.parametrizations):
                parametrize.remove_parametrizations(module, attribute, leave_parametrized=True)
                merged += 1
    return merged
