"""A checkpoint family: everything the project does with one spec prefix, in one object.

A family module (``clipeval.models.hf``, ``...open_clip``, ``...dual``, ``...baseline``, or one of
your own) defines ``FAMILY = CheckpointFamily(...)`` and is named by one line of
:data:`clipeval.models.registry.CHECKPOINT_FAMILIES` (or :func:`~clipeval.models.registry.register_family`).
How to add one: docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from clipeval.models.encoder import Encoder
    from clipeval.models.registry import CheckpointSpec


def _no_repos(target: str) -> list[str]:
    return []


@dataclass(frozen=True)
class CheckpointFamily:
    """One spec prefix's loader, saver, trainable towers, tiny builder and hub mirror entries.

    Attributes:
        prefix: the spec prefix (``hf`` in ``hf:openai/clip-vit-base-patch32``).
        description: the catalogue's name for the family (shown for specs the catalogue does not list).
        load: ``(spec, device, precision) -> Encoder``.
        load_text: the same for an encoder of texts only (its ``text_only`` set), lighter where the family can leave
            the image tower unbuilt (a one-query text search needs no image tower); ``None``: :meth:`loader` falls
            back on ``load``.
        save: ``(encoder, folder) -> spec`` writing a (fine-tuned) model in the format ``load`` reads;
            ``None`` when the family cannot be saved, and so not fine-tuned. A fine-tunable encoder's
            ``model`` holds a learnable ``logit_scale`` (the log temperature, as CLIP's) and, for a sigmoid
            loss, a ``logit_bias``.
        image_tower: the model's submodules making up the image tower (fine-tuning's LiT locks them).
        build_tiny: ``(folder, seed) -> spec``: a tiny random checkpoint for tests and smoke runs.
        hub_repos: ``target -> [hub repository, ...]`` a spec downloads (``[]`` for local targets).
        mirror_builders: ``() -> {repository: builder(folder)}``: random-weight stand-ins, under the real
            names, of the repositories the rehearsal mirror holds for this family.
    """

    prefix: str
    description: str
    load: Callable[[CheckpointSpec, torch.device, str], Encoder]
    load_text: Callable[[CheckpointSpec, torch.device, str], Encoder] | None = None
    save: Callable[[Encoder, Path], str] | None = None
    image_tower: tuple[str, ...] = ()
    build_tiny: Callable[[Path, int], str] | None = None
    hub_repos: Callable[[str], list[str]] = _no_repos
    mirror_builders: Callable[[], dict[str, Callable[[Path], None]]] = field(default=dict)

    def loader(self, text_only: bool = False) -> Callable[[CheckpointSpec, torch.device, str], Encoder]:
        """``load_text`` when only texts will be encoded and the family has one, else ``load``."""
        return self.load_text if text_only and self.load_text is not None else self.load

    @property
    def fine_tunable(self) -> bool:
        """Whether fine-tuning can lock its image tower and save the result."""
        return self.save is not None and bool(self.image_tower)
