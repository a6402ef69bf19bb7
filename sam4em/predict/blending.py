"""Smooth tile weights and the tile layout of one slice."""

from __future__ import annotations

import numpy as np

WINDOWS = ("bump", "gaussian", "flat")
# floor of every window, so pixels at the image border (covered by one tile) keep a weight
_FLOOR = 1e-3


def blend_window(size: int, kind: str = "bump") -> np.ndarray:
    """(size, size) float32 weight, highest in the middle and near zero at the edges.

    ``bump`` is the smooth compact bump exp(1 - 1/(1 - r^2)) per axis, ``gaussian`` a
    Gaussian with sigma = size/6 per axis, ``flat`` all ones (for comparison). Overlapping
    windows are normalised by their sum at prediction time, so weights sum to one.
    """
    if kind not in WINDOWS:
        raise ValueError(f"window '{kind}' is not one of {', '.join(WINDOWS)}")
    r = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1  # -1..1 at pixel centres
    if kind == "bump":
        axis = np.exp(1 - 1 / np.clip(1 - r**2, 1e-9, None))
    elif kind == "gaussian":
        axis = np.exp(-0.5 * (r / (1 / 3)) ** 2)
    else:
        axis = np.ones_like(r)
    return np.maximum(np.outer(axis, axis), _FLOOR).astype(np.float32)
