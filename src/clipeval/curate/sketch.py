"""A mergeable fixed-width histogram of a bounded score: the sketch for a global cut past memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SKETCH_BINS = 2**20
SCORE_RANGES = {"cosine": (-1.0, 1.0), "clip_score_100": (0.0, 100.0), "clip_score_2_5": (0.0, 2.5)}


@dataclass
class ScoreHistogram:
    """A mergeable fixed-width histogram of a bounded score (2^20 bins: about 1.9e-6 wide for the cosine).

    Attributes:
        low, high: the score's range (values outside are clipped into the end bins).
        counts: rows per bin.
    """

    low: float
    high: float
    counts: np.ndarray = field(default_factory=lambda: np.zeros(SKETCH_BINS, dtype=np.int64))

    @classmethod
    def for_score(cls, score: str) -> ScoreHistogram:
        """An empty histogram over a score's range (:data:`SCORE_RANGES`)."""
        return cls(*SCORE_RANGES[score])

    @property
    def width(self) -> float:
        return (self.high - self.low) / len(self.counts)

    def bins(self, values: np.ndarray) -> np.ndarray:
        index = np.floor((np.asarray(values, dtype=np.float64) - self.low) / self.width)
        return np.clip(index, 0, len(self.counts) - 1).astype(np.int64)

    def add(self, values: np.ndarray) -> None:
        self.counts += np.bincount(self.bins(values), minlength=len(self.counts))

    def merge(self, other: ScoreHistogram) -> ScoreHistogram:
        if (other.low, other.high, len(other.counts)) != (self.low, self.high, len(self.counts)):
            raise ValueError("only histograms over the same range and bins merge")
        return ScoreHistogram(self.low, self.high, self.counts + other.counts)

    def bin_of_rank_from_top(self, rank: int) -> int:
        """The bin holding the ``rank``-th highest value (1-based)."""
        from_top = np.cumsum(self.counts[::-1])
        return len(self.counts) - 1 - int(np.searchsorted(from_top, rank))

    def edge(self, bin_index: int) -> float:
        return self.low + bin_index * self.width
