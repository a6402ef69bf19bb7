"""Class-balanced drawing of training examples, with a resumable random state.

For each balanced class c with rate r_c (in config order), a draw is taken with
probability r_c from the examples that contain c; otherwise the next class is tried,
and a draw that no class claimed is uniform over all examples. With one balanced class
the share of draws containing it is ``r + (1 - r) * natural share``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class BalancedSampler:
    """Draws example indices; ``state()``/``restore()`` make a run resumable."""

    def __init__(
        self, presence: np.ndarray, classes: list[str], rates: dict[str, float], seed: int
    ) -> None:
        self.n = len(presence)
        if self.n == 0:
            raise ValueError("no training examples")
        self.pools: list[tuple[float, np.ndarray]] = []
        for cls, rate in rates.items():
            if cls not in classes:
                raise ValueError(f"balance: unknown class '{cls}'")
            pool = np.flatnonzero(presence[:, classes.index(cls)] > 0)
            if len(pool) and rate > 0:
                self.pools.append((float(rate), pool))
        self.rng = np.random.default_rng(seed)

    def draw(self, k: int) -> np.ndarray:
        """``k`` example indices."""
        out = np.empty(k, dtype=np.int64)
        for i in range(k):
            for rate, pool in self.pools:
                if self.rng.random() < rate:
                    out[i] = pool[self.rng.integers(len(pool))]
                    break
            else:
                out[i] = self.rng.integers(self.n)
        return out

    def state(self) -> dict[str, Any]:
        """The random state, for checkpoints."""
        return self.rng.bit_generator.state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved random state."""
        self.rng.bit_generator.state = state
