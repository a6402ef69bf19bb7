"""The model-tile lattice: where square model tiles sit on a plane.

One type serves training tiles, the block plan and inference. A lattice has a tile side
and a stride (tiles overlap by ``tile - stride``); along each axis tiles start every
``stride`` pixels and the last one is shifted back to end flush with the axis, so every
pixel is covered and no tile leaves the plane. An axis shorter than one tile gets a
single tile at 0 (the caller pads).
"""

from __future__ import annotations

from dataclasses import dataclass

from sam4em.tiling.resample import input_span, scaled_length


@dataclass(frozen=True)
class Lattice:
    """Square tiles of side ``tile`` every ``stride`` pixels along both axes of a plane."""

    tile: int
    stride: int

    def __post_init__(self) -> None:
        if self.tile <= 0 or not 0 < self.stride <= self.tile:
            raise ValueError(
                f"a tile lattice needs 0 < stride ({self.stride}) <= tile ({self.tile})"
            )

    @classmethod
    def from_overlap(cls, tile: int, overlap: int | None = None) -> Lattice:
        """The lattice of tiles that overlap their neighbours by ``overlap`` pixels
        (None: a quarter of the tile, ``inference.tile_overlap``'s default)."""
        overlap = tile // 4 if overlap is None else overlap
        if not 0 <= overlap < tile:
            raise ValueError(f"tile overlap {overlap} must be in [0, tile size {tile})")
        return cls(tile, tile - overlap)

    @property
    def overlap(self) -> int:
        """Pixels shared by neighbouring tiles."""
        return self.tile - self.stride

    def starts(self, length: int) -> list[int]:
        """Tile starts along an axis of ``length`` pixels."""
        if length <= self.tile:
            return [0]
        starts = list(range(0, length - self.tile + 1, self.stride))
        if starts[-1] != length - self.tile:
            starts.append(length - self.tile)
        return starts

    def covering(self, length: int, start: int, stop: int) -> list[int]:
        """Tile starts that cover ``[start, stop)`` of an axis of ``length`` pixels: the
        lattice laid from ``start`` over the span, or, for a span shorter than a tile, one
        tile centred on it (moved inside the axis; at 0 when the axis is shorter than a
        tile). On the whole axis this is :meth:`starts`, and it depends only on the span
        and the axis's end near it, never on the rest of the axis."""
        span = stop - start
        if span >= self.tile:
            return [start + t for t in self.starts(span)]
        centred = start - (self.tile - span) // 2
        return [max(0, min(centred, length - self.tile))]

    def origins(self, height: int, width: int) -> list[tuple[int, int]]:
        """(y, x) corners of the tiles covering a ``height`` x ``width`` plane."""
        return [(y, x) for y in self.starts(height) for x in self.starts(width)]

    def touching(self, length: int, start: int, stop: int) -> list[int]:
        """Starts of the tiles along an axis of ``length`` that overlap ``[start, stop)``."""
        return [t for t in self.starts(length) if t < stop and t + self.tile > start]

    def window(
        self, length: int, scale: float, start: int, stop: int
    ) -> tuple[list[int], tuple[int, int]]:
        """For volume pixels [start, stop) of an axis of ``length``, with the lattice on
        the model grid (the axis resampled by ``scale``): the starts of the tiles whose
        output those pixels are interpolated from, and the volume span those tiles are
        resampled from. At scale 1: the tiles touching [start, stop) and their extent."""
        n = scaled_length(length, scale)
        tiles = self.touching(n, *input_span(n, length, start, stop))
        return tiles, input_span(length, n, min(tiles), min(n, max(tiles) + self.tile))
