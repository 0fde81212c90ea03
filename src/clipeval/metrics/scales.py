"""The score scales of a pair's cosine similarity (docs/scoring.md): pure numpy, one definition each."""

from __future__ import annotations

import numpy as np


def clip_score_100(cosine):
    """torchmetrics' CLIPScore scale, per sample: ``100 * max(cos, 0)``."""
    return 100.0 * np.maximum(cosine, 0.0)


def clip_score_2_5(cosine):
    """The CLIPScore paper's scale (Hessel et al. 2021): ``2.5 * max(cos, 0)``."""
    return 2.5 * np.maximum(cosine, 0.0)
