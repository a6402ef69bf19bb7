"""Union-find over integer labels 0..n (0 is background and is never merged)."""

from __future__ import annotations

import numpy as np


class UnionFind:
    """Disjoint sets of labels 1..n with path halving; ``roots()`` resolves them all."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n + 1, dtype=np.int64)

    def find(self, a: int) -> int:
        """Representative of ``a``'s set."""
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return a

    def union_pairs(self, pairs: np.ndarray) -> None:
        """Merge the sets of each row (a, b) of an (N, 2) array; the smaller root wins."""
        for a, b in pairs:
            ra, rb = self.find(int(a)), self.find(int(b))
            if ra != rb:
                lo, hi = (ra, rb) if ra < rb else (rb, ra)
                self.parent[hi] = lo

    def roots(self) -> np.ndarray:
        """Root of every label (vectorised pointer jumping until nothing changes)."""
        parent = self.parent.copy()
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand
