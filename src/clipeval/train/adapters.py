"""Low-rank adapters (LoRA, Hu et al. 2021) on the attention projections of any checkpoint family (docs/fine-tuning.md,
"Modes").

An adapter is a ``torch.nn.utils.parametrize`` parametrization ``W + (alpha / rank) * B @ A``, ``B`` at zero so
training starts from the base exactly. A parametrization works on any weight the model reads by attribute, so
it covers ``nn.Linear`` projections and ``nn.MultiheadAttention``'s fused ``in_proj_weight`` (open_clip), which
peft handles only experimentally. :func:`merge_adapters` folds them in, so a saved checkpoint is a plain model of
its family.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "c_proj", "q_lin", "k_lin", "v_lin", "out_lin")


class LowRankDelta(nn.Module):
    """The parametrization ``W -> W + (alpha / rank) * up @ down`` of one ``(out_features, in_features)`` weight."""

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
    """Freeze every parameter of ``model`` and add a trainable adapter to each attention projection, in place;
    returns the adapted weights' qualified names.

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
