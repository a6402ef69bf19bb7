"""Positions of overlapping tiles along one axis."""

from __future__ import annotations


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` every ``stride`` pixels covering ``length``.

    The last tile is shifted back to end exactly at ``length``, so every pixel is covered
    and no tile leaves the image. An axis shorter than one tile gets a single tile at 0
    (the caller pads).
    """
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be positive")
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts
