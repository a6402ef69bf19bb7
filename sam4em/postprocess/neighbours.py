"""Neighbour offsets of 6-, 18- and 26-connectivity and label pairs that touch."""

from __future__ import annotations

import itertools

import numpy as np

CONNECTIVITIES = (6, 18, 26)


def half_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """One offset of each neighbour pair: those whose first non-zero component is +1."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity}")
    limit = {6: 1, 18: 2, 26: 3}[connectivity]
    out = []
    for o in itertools.product((-1, 0, 1), repeat=3):
        nonzero = [c for c in o if c]
        if nonzero and nonzero[0] == 1 and len(nonzero) <= limit:
            out.append(o)
    return out


def touching_pairs(labels: np.ndarray, connectivity: int) -> np.ndarray:
    """Unique (a, b), a < b, of different non-zero labels that are neighbours in ``labels``."""
    found = []
    for o in half_offsets(connectivity):
        src = tuple(slice(max(0, -c), n - max(0, c)) for c, n in zip(o, labels.shape, strict=True))
        dst = tuple(slice(max(0, c), n - max(0, -c)) for c, n in zip(o, labels.shape, strict=True))
        a, b = labels[src], labels[dst]
        hit = (a != 0) & (b != 0) & (a != b)
        if hit.any():
            a, b = a[hit].astype(np.int64), b[hit].astype(np.int64)
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    return unique_pairs(np.concatenate(found) if found else np.zeros((0, 2), np.int64))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of a (k, 2) array of non-negative int64 ids, sorted."""
    if not len(pairs):
        return np.zeros((0, 2), dtype=np.int64)
    top = int(pairs.max()) + 1
    if top > 2**31:  # the one-number key below would overflow
        return np.unique(pairs, axis=0)
    keys = np.unique(pairs[:, 0] * top + pairs[:, 1])  # one sort of numbers, not of rows
    return np.stack([keys // top, keys % top], axis=1)


def shell_pairs(
    labels: np.ndarray, core: tuple[slice, slice, slice], connectivity: int
) -> np.ndarray:
    """:func:`touching_pairs` of ``labels`` restricted to pairs with a voxel outside its
    ``core`` region (the one-voxel shell around it): only the two-voxel-thick slab at each
    face where the shell lies is scanned (every such pair lies within one of them)."""
    found = [np.zeros((0, 2), dtype=np.int64)]
    for axis, sl in enumerate(core):
        start, stop = sl.indices(labels.shape[axis])[:2]
        for lo, present in ((0, start > 0), (labels.shape[axis] - 2, stop < labels.shape[axis])):
            if present:
                index = [slice(None)] * 3
                index[axis] = slice(max(lo, 0), lo + 2)
                found.append(touching_pairs(labels[tuple(index)], connectivity))
    return unique_pairs(np.concatenate(found))
