"""Multiscale levels for viewers.

Each level halves y and x of the one before (z keeps its sections), until the largest
side fits a screen. Intensities and probabilities are averaged over each 2 x 2 block;
label images take the block's most frequent value, so every id in a level exists at
level 0. Levels are written tile by tile from level 0, so no whole volume is ever in
memory, and the OME-NGFF metadata (:func:`sam4em.io.zarr_store.write_image_metadata`)
places each level's voxels on the centres of the level-0 blocks they summarise.

The arrays are written here rather than through ome-zarr's ``write_image`` /
``write_multiscale`` because level 0 of a prediction or instance store is filled in
place, block by block, by many jobs before any level exists (those writers create the
arrays from complete images), and because ome-zarr's downsampling methods have no mode
for label ids and record no offset for averaged levels. Only the metadata goes through
ome-zarr's writers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import zarr

from sam4em.io.zarr_store import LEVEL0, create_array, write_image_metadata

#: levels are added until the largest y/x side is at most this many voxels
SCREEN = 512
#: the level-0 tile edge read at once (times the largest factor, rounded up)
TILE = 2048

Downsampling = Literal["mean", "mode"]


def pyramid_factors(shape: Sequence[int], screen: int = SCREEN) -> list[int]:
    """The y/x downsampling factors 1, 2, 4, ... of the levels of a ZYX ``shape``: the
    last is the first whose level is at most ``screen`` voxels on its longest side."""
    factors = [1]
    while -(-max(int(shape[1]), int(shape[2])) // factors[-1]) > screen:
        factors.append(factors[-1] * 2)
    return factors


def halve(data: np.ndarray, how: Downsampling) -> np.ndarray:
    """``data`` (z, y, x) at half the y/x size (rounded up; odd edges repeat their last
    row/column): the rounded mean of each 2 x 2 block, or its most frequent value (the
    first of the block in y-major order on ties)."""
    padded = np.pad(data, ((0, 0), (0, data.shape[1] % 2), (0, data.shape[2] % 2)), mode="edge")
    a, b, c, d = (padded[:, i::2, j::2] for i in (0, 1) for j in (0, 1))
    if how == "mean":
        total = a.astype(np.float32) + b + c + d
        return np.rint(total / 4).astype(data.dtype)
    # how often each of the four occurs among them (minus one), from the six pairs
    ab, ac, ad, bc, bd, cd = a == b, a == c, a == d, b == c, b == d, c == d
    counts = [
        ab.astype(np.int8) + ac + ad,
        ab.astype(np.int8) + bc + bd,
        ac.astype(np.int8) + bc + cd,
        ad.astype(np.int8) + bd + cd,
    ]
    out, best = a.copy(), counts[0]
    for value, count in zip((b, c, d), counts[1:], strict=True):
        more = count > best  # strictly more: ties keep the earlier value
        out[more], best = value[more], np.maximum(best, count)
    return out


def level_shape(shape: Sequence[int], factor: int) -> tuple[int, int, int]:
    """The ZYX shape of the level ``factor`` of a level-0 ``shape``."""
    return (int(shape[0]), -(-int(shape[1]) // factor), -(-int(shape[2]) // factor))


def block_levels(shape: Sequence[int], chunks: Sequence[int], block_shape: Sequence[int]) -> int:
    """How many levels after level 0 the block jobs of a grid of ``block_shape`` write
    themselves (:func:`write_block_levels`): level k as long as every block covers whole
    chunks of it, i.e. the block's y and x are multiples of the level's factor times the
    chunk (levels keep level 0's chunks)."""
    n = 0
    for f in pyramid_factors(shape)[1:]:
        if block_shape[1] % (f * chunks[1]) or block_shape[2] % (f * chunks[2]):
            break
        n += 1
    return n


def create_levels(group: zarr.Group, paths: Sequence[str], factors: Sequence[int]) -> list:
    """(Re)create the empty arrays ``group[paths[k]]``, k >= 1, of level ``factors[k]``
    of ``group[paths[0]]`` (same chunks and type)."""
    level0 = group[paths[0]]
    for path in paths[1:]:
        if path in group:
            del group[path]
    return [
        create_array(group, p, level_shape(level0.shape, f), level0.chunks, level0.dtype)
        for p, f in zip(paths[1:], factors[1:], strict=True)
    ]


def write_block_levels(
    group: zarr.Group,
    paths: Sequence[str],
    factors: Sequence[int],
    start: Sequence[int],
    stop: Sequence[int],
    how: Downsampling,
    data: np.ndarray,
) -> None:
    """Write the footprint of the level-0 block ``start`` .. ``stop`` (z, y, x) in the
    existing levels ``paths[1:]`` (at most :func:`block_levels` of them): the same values
    as :func:`write_levels` gives there, since the block starts on a multiple of each
    factor. ``data``: the block's level-0 values (the caller has just written them)."""
    (z0, y0, x0), z1 = start, stop[0]
    for path, f in zip(paths[1:], factors[1:], strict=True):
        data = halve(data, how)
        ys, xs = y0 // f, x0 // f
        group[path][z0:z1, ys : ys + data.shape[1], xs : xs + data.shape[2]] = data


def write_levels(
    group: zarr.Group,
    paths: Sequence[str],
    factors: Sequence[int],
    how: Downsampling,
    progress: Callable[[int], None] | None = None,
    done: int = 0,
) -> None:
    """(Re)create ``group[paths[k]]`` for k > ``done`` as level ``factors[k]`` of the
    array ``group[paths[0]]``, computed from level ``done`` (complete already: level 0,
    or the last level the block jobs wrote) one tile at a time (all z of one z chunk,
    ``TILE`` voxels in y and x of that level, aligned to the largest factor)."""
    source = group[paths[done]]
    shape, chunks = source.shape, source.chunks
    levels = create_levels(group, [paths[0], *paths[done + 1 :]], [1, *factors[done + 1 :]])
    if not levels:
        return
    steps = [f // factors[done] for f in factors[done + 1 :]]
    top = steps[-1]
    edge = -(-TILE // top) * top
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(z0 + chunks[0], shape[0])
        for y0 in range(0, shape[1], edge):
            for x0 in range(0, shape[2], edge):
                data = np.asarray(source[z0:z1, y0 : y0 + edge, x0 : x0 + edge])
                for arr, f in zip(levels, steps, strict=True):
                    data = halve(data, how)
                    ys, xs = y0 // f, x0 // f
                    arr[z0:z1, ys : ys + data.shape[1], xs : xs + data.shape[2]] = data
        if progress is not None:
            progress(z1 - z0)


def level_paths(level0: str, factors: Sequence[int]) -> list[str]:
    """The array names of an image's levels: ``0, 1, 2 ...`` beside the level ``0`` of a
    per-class image, ``raw, raw_2x, raw_4x ...`` beside any other level-0 name."""
    if level0 == LEVEL0:
        return [str(k) for k in range(len(factors))]
    return [level0, *(f"{level0}_{f}x" for f in factors[1:])]


def block_pyramid(
    shape: Sequence[int], chunks: Sequence[int], block_shape: Sequence[int]
) -> tuple[list[str], list[int]]:
    """Names and factors of level 0 and of the levels the block jobs of a per-class
    image (level 0 named ``0``) write themselves (:func:`block_levels`)."""
    factors = pyramid_factors(shape)
    n = block_levels(shape, chunks, block_shape)
    return level_paths(LEVEL0, factors)[: n + 1], factors[: n + 1]


def write_pyramid(
    group: zarr.Group,
    name: str,
    voxel_size: Sequence[float],
    how: Downsampling,
    level0: str = LEVEL0,
    progress: Callable[[int], None] | None = None,
    done: int = 0,
) -> None:
    """The viewer levels of the image whose level 0 is ``group[level0]``
    (:func:`write_levels`, names from :func:`level_paths`; levels 1 .. ``done`` are
    written already, by block jobs) and its OME-NGFF metadata."""
    factors = pyramid_factors(group[level0].shape)
    paths = level_paths(level0, factors)
    write_levels(group, paths, factors, how, progress, done)
    write_image_metadata(group, name, paths, voxel_size, factors, how)
