"""Merging provisional labels 0..n that touch into objects (0 is background, never merged).

One vectorised pass over all contact pairs: the pairs are the edges of a sparse graph,
whose connected components (``scipy.sparse.csgraph``) are the objects. Each label's root
is the smallest label of its object, so ids come out in order of first appearance.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def merged_roots(n: int, pairs: np.ndarray) -> np.ndarray:
    """Root (the smallest member) of every label 0..n, merging each row (a, b) of the
    (N, 2) ``pairs``; labels in no pair are their own root."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n + 1, n + 1))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, n + 1, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(n + 1, dtype=np.int64))
    return smallest[component]
