"""Retrieval's options: cut-offs, bootstrap and missing images (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalOptions:
    """How retrieval is evaluated (the command line's flags are these fields).

    Attributes:
        ks: cut-offs for HitRate@k and Recall@k.
        n_resamples: bootstrap resamples for the 95% CIs (over queries).
        seed: the bootstrap's seed.
        top_k: length of the stored top-k lists (at least ``max(ks)``).
        allow_missing_images: go on when fewer than half the local image files are found.
    """

    ks: tuple[int, ...] = field(default=(1, 5, 10), metadata={
        "flag": "--k", "help": "cut-offs for HitRate@k and Recall@k: --k 1 5 10 (or --k 1 --k 5)"})
    n_resamples: int = field(default=1000, metadata={"flag": "--bootstrap", "help": "bootstrap resamples for the CIs"})
    seed: int = field(default=0, metadata={"help": "the bootstrap's seed"})
    top_k: int = field(default=10, metadata={"cli": False})
    allow_missing_images: bool = field(default=False, metadata={
        "help": "go on when fewer than half the local image files are found (default: stop)"})
