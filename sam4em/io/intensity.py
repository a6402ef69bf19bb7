"""Conversion of raw intensities to uint8.

The rule: uint8 data is kept as it is. Any other dtype is mapped linearly from a range
``[lo, hi]`` onto ``0..255``: ``round((clip(v, lo, hi) - lo) / (hi - lo) * 255)``.
The range is the dataset's ``raw_range`` when configured, otherwise the minimum and
maximum of the finite values of the whole volume (NaN and infinities ignored; a volume
with no finite value is an error). A constant volume maps to 0; NaN maps to 0, +inf to
255 and -inf to 0.
"""

from __future__ import annotations

import numpy as np

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource


def volume_range(source: VolumeSource, slab: int = 16) -> tuple[float, float]:
    """Minimum and maximum of the finite values of the whole volume, reading ``slab``
    slices at a time; an InputDataError when there is none."""
    lo, hi = np.inf, -np.inf
    for z0 in range(0, source.shape[0], slab):
        data = source.read(z0, min(z0 + slab, source.shape[0]))
        if data.dtype.kind == "f":
            data = data[np.isfinite(data)]
        if data.size == 0:
            continue
        lo = min(lo, float(data.min()))
        hi = max(hi, float(data.max()))
    if not np.isfinite(lo):
        raise InputDataError(f"{source.name}: no finite intensity (all NaN or infinite)")
    return lo, hi


def to_uint8(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``data`` from ``[lo, hi]`` to uint8 by the module's rule; uint8 stays as is."""
    if data.dtype == np.uint8:
        return data
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.clip(data.astype(np.float64), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.nan_to_num(np.round(scaled), nan=0.0).astype(np.uint8)
