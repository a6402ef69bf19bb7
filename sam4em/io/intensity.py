"""Conversion of raw intensities to uint8.

The rule: uint8 data is kept as it is. Any other dtype is mapped linearly from a range
``[lo, hi]`` onto ``0..255``: ``round((clip(v, lo, hi) - lo) / (hi - lo) * 255)``.
The range is the dataset's ``raw_range`` when configured, otherwise the minimum and
maximum of the whole volume (NaNs ignored). A constant volume maps to 0.
"""

from __future__ import annotations

import numpy as np

from sam4em.io.source import VolumeSource


def volume_range(source: VolumeSource, slab: int = 16) -> tuple[float, float]:
    """Minimum and maximum over the whole volume, reading ``slab`` slices at a time."""
    lo, hi = np.inf, -np.inf
    for z0 in range(0, source.shape[0], slab):
        data = source.read(z0, min(z0 + slab, source.shape[0]))
        if data.size == 0:
            continue
        lo = min(lo, float(np.nanmin(data)))
        hi = max(hi, float(np.nanmax(data)))
    if not np.isfinite(lo):
        lo, hi = 0.0, 0.0
    return lo, hi


def to_uint8(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``data`` from ``[lo, hi]`` to uint8 by the module's rule; uint8 stays as is."""
    if data.dtype == np.uint8:
        return data
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.clip(data.astype(np.float64), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.nan_to_num(np.round(scaled), nan=0.0).astype(np.uint8)
