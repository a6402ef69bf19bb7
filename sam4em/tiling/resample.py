"""Resampling between the volume's pixel grid and the model's (``tiling.scale``).

One rule serves training tiles, inference reads and the probabilities written back, and
it is anchored to absolute pixel positions, so a block that resamples only its own read
box gets exactly the values a whole-volume resample gives there:

- shrinking (n_out < n_in): output pixel i is the area average of the input interval
  [i * n_in / n_out, (i + 1) * n_in / n_out) (a 2 x 2 mean at scale 0.5);
- enlarging (n_out > n_in): linear interpolation at input coordinate
  (i + 0.5) * n_in / n_out - 0.5, clamped to the axis;
- equal lengths: the identity.

Axes are resampled separately with small weight matrices over the needed range only.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import sparse


def scaled_length(n: int, scale: float) -> int:
    """Length of an axis of ``n`` pixels at ``scale`` (at least 1)."""
    return max(1, round(n * scale))


def scaled_plane(plane: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(Y, X) of the last two axes of ``plane`` at ``scale``."""
    return scaled_length(plane[-2], scale), scaled_length(plane[-1], scale)


def resample_weights(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, np.ndarray]:
    """Weights of output pixels [start, stop) of an axis resampled from ``n_in`` to
    ``n_out`` pixels: ``(first input pixel, (stop - start, k) float64 matrix)``, the matrix
    covering input pixels [first, first + k), exactly those with a non-zero weight."""
    if not 0 <= start < stop <= n_out:
        raise ValueError(f"output range [{start}, {stop}) outside an axis of {n_out}")
    rows = np.arange(start, stop)
    if n_out == n_in:
        return start, np.eye(stop - start)
    if n_out < n_in:
        ratio = n_in / n_out
        lo, hi = rows * ratio, (rows + 1) * ratio
        first, last = int(math.floor(lo[0])), min(n_in, int(math.ceil(hi[-1])))
        k = np.arange(first, last)
        overlap = np.minimum(hi[:, None], k[None] + 1) - np.maximum(lo[:, None], k[None])
        weights = np.clip(overlap, 0, None) / ratio
    else:
        coord = np.clip((rows + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        left = np.floor(coord).astype(int)
        right = np.minimum(left + 1, n_in - 1)
        first, last = int(left[0]), int(right[-1]) + 1
        weights = np.zeros((len(rows), last - first))
        frac = coord - left
        np.add.at(weights, (np.arange(len(rows)), left - first), 1 - frac)
        np.add.at(weights, (np.arange(len(rows)), right - first), frac)
    used = np.flatnonzero(weights.any(axis=0))  # drop zero-weight input pixels at the ends
    return first + int(used[0]), weights[:, used[0] : used[-1] + 1]


def input_span(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, int]:
    """Input pixels [first, last) that output pixels [start, stop) depend on."""
    first, weights = resample_weights(n_in, n_out, start, stop)
    return first, first + weights.shape[1]


def resample(
    image: np.ndarray,
    full_in: tuple[int, int],
    full_out: tuple[int, int],
    origin_in: tuple[int, int] = (0, 0),
    box_out: tuple[int, int, int, int] | None = None,
    *,
    grey: bool = False,
) -> np.ndarray:
    """Resample the last two axes of ``image``, a window at ``origin_in`` of a (Y, X)
    plane of shape ``full_in``, onto output pixels ``box_out`` = (y0, y1, x0, x1) of that
    plane at shape ``full_out`` (default: all of it). The window must hold every input
    pixel the box needs (see :func:`input_span`). Float32 result; uint8 for ``grey``
    images (rounded)."""
    y0, y1, x0, x1 = box_out or (0, full_out[0], 0, full_out[1])
    identity = tuple(full_in) == tuple(full_out)
    if identity:  # a plain crop
        (fy, ny), (fx, nx) = (y0, y1 - y0), (x0, x1 - x0)
    else:
        fy, wy = _sparse_weights(full_in[0], full_out[0], y0, y1)
        fx, wx = _sparse_weights(full_in[1], full_out[1], x0, x1)
        ny, nx = wy.shape[1], wx.shape[1]
    ay, ax = fy - origin_in[0], fx - origin_in[1]
    if ay < 0 or ax < 0 or ay + ny > image.shape[-2] or ax + nx > image.shape[-1]:
        raise ValueError("the input window does not hold every pixel the output needs")
    window = image[..., ay : ay + ny, ax : ax + nx]
    if identity:
        out = window.astype(np.float32)
    else:  # float64 sums: a window and the whole plane agree far below float32 precision
        out = _apply(wy, _apply(wx, window.astype(np.float64), -1), -2).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if grey else out


@functools.lru_cache(maxsize=32)
def _sparse_weights(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, sparse.csr_array]:
    """:func:`resample_weights` as a sparse matrix (each output pixel has a few non-zero
    weights), kept for the next slice of the same window."""
    first, weights = resample_weights(n_in, n_out, start, stop)
    return first, sparse.csr_array(weights)


def _apply(weights: sparse.csr_array, data: np.ndarray, axis: int) -> np.ndarray:
    """``weights`` (out, in) applied along ``axis`` of ``data``."""
    moved = np.moveaxis(data, axis, 0)
    out = weights @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(out.reshape(weights.shape[0], *moved.shape[1:]), 0, axis)
