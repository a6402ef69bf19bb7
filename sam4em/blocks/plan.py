"""The block plan: which part of the volume each inference job reads and writes.

Vocabulary (after daisy): a block's *core* is the box it writes; its *read* box is the
core grown by an XY halo; its *warm-up* slices are up to W slices just before the core
in z, run through the model only to fill the memory bank. Cores tile the volume exactly
and start on the output chunk grid, so parallel jobs never write the same chunk.

The halo is not a fixed width: model tiles sit on one lattice over the whole volume
(tile size S, stride S - overlap, the last tile of an axis flush with its end), and a
block reads exactly the lattice tiles that touch its core. Every core voxel is thus
predicted from the same tiles, with the same blending, as in a single whole-volume run.

With ``tiling.scale`` != 1 the lattice lies on the model's grid (the volume resampled by
the scale, see :mod:`sam4em.tiling.resample`): a block runs the lattice tiles that touch
the model pixels its core's values are interpolated from, and reads the volume pixels
those tiles are resampled from.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam4em.io.atomic import write_json_atomic
from sam4em.tiling.grid import tile_starts
from sam4em.tiling.resample import input_span, scaled_length

Vec3 = tuple[int, int, int]


@dataclass(frozen=True)
class Box:
    """Half-open box ``start <= p < stop`` in (z, y, x) voxels."""

    start: Vec3
    stop: Vec3

    @property
    def shape(self) -> Vec3:
        """Extent along z, y, x."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def slices(self) -> tuple[slice, slice, slice]:
        """Numpy/zarr index of the box."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Block:
    """One inference job's geometry."""

    id: str
    index: Vec3
    core: Box
    read: Box
    warmup: tuple[int, int]  # z range [start, stop) run before the core, outputs dropped


def _vec3(values: Sequence[int], name: str) -> Vec3:
    if len(values) != 3 or any(int(v) != v for v in values):
        raise ValueError(f"{name} must be three integers (z, y, x), got {values!r}")
    return (int(values[0]), int(values[1]), int(values[2]))


def touching_tiles(length: int, tile: int, stride: int, start: int, stop: int) -> list[int]:
    """Starts of the lattice tiles along one axis that overlap ``[start, stop)``."""
    return [t for t in tile_starts(length, tile, stride) if t < stop and t + tile > start]


def scaled_window(
    length: int, tile: int, stride: int, scale: float, start: int, stop: int
) -> tuple[list[int], tuple[int, int]]:
    """Along one axis, for core pixels [start, stop) of an axis of ``length``: the starts,
    on the model grid, of the lattice tiles the block runs (those touching the model
    pixels its core is interpolated from), and the volume span it reads. At scale 1 these
    are the tiles touching the core and their extent."""
    n = scaled_length(length, scale)
    tiles = touching_tiles(n, tile, stride, *input_span(n, length, start, stop))
    return tiles, input_span(length, n, min(tiles), min(n, max(tiles) + tile))


def plan_blocks(
    shape: Sequence[int],
    block_shape: Sequence[int],
    chunks: Sequence[int],
    tile_size: int,
    tile_overlap: int,
    warmup: int,
    scale: float = 1.0,
) -> list[Block]:
    """Cut a volume of ``shape`` into blocks whose cores are multiples of ``chunks``;
    read boxes follow the model-tile lattice (``tile_size``, ``tile_overlap``, ``scale``)."""
    shape, block_shape, chunks = (
        _vec3(shape, "shape"),
        _vec3(block_shape, "block_shape"),
        _vec3(chunks, "chunks"),
    )
    if min(shape) < 1 or min(block_shape) < 1 or min(chunks) < 1:
        raise ValueError("shape, block_shape and chunks must be positive")
    if warmup < 0:
        raise ValueError("warmup must not be negative")
    if tile_size < 1 or not 0 <= tile_overlap < tile_size:
        raise ValueError(f"tile overlap {tile_overlap} must be in [0, tile size {tile_size})")
    stride = tile_size - tile_overlap
    for axis, (b, c) in zip("zyx", zip(block_shape, chunks, strict=True), strict=True):
        if b % c:
            raise ValueError(f"block_shape {axis}={b} is not a multiple of chunks {axis}={c}")
    counts = [-(-s // b) for s, b in zip(shape, block_shape, strict=True)]
    width = len(str(max(counts) - 1))
    blocks = []
    for index in itertools.product(*(range(n) for n in counts)):
        start = tuple(i * b for i, b in zip(index, block_shape, strict=True))
        stop = tuple(min(a + b, s) for a, b, s in zip(start, block_shape, shape, strict=True))
        _, ys = scaled_window(shape[1], tile_size, stride, scale, start[1], stop[1])
        _, xs = scaled_window(shape[2], tile_size, stride, scale, start[2], stop[2])
        read_start, read_stop = (start[0], ys[0], xs[0]), (stop[0], ys[1], xs[1])
        blocks.append(
            Block(
                id="z{:0{w}d}y{:0{w}d}x{:0{w}d}".format(*index, w=width),
                index=index,  # type: ignore[arg-type]
                core=Box(start, stop),  # type: ignore[arg-type]
                read=Box(read_start, read_stop),  # type: ignore[arg-type]
                warmup=(max(0, start[0] - warmup), start[0]),
            )
        )
    return blocks


def plan_to_dict(
    blocks: list[Block], shape: Sequence[int], settings: dict[str, Any]
) -> dict[str, Any]:
    """JSON-ready form of a plan, with the settings that made it."""
    return {
        "volume_shape": list(shape),
        "settings": settings,
        "blocks": [
            {
                "id": b.id,
                "index": list(b.index),
                "core": {"start": list(b.core.start), "stop": list(b.core.stop)},
                "read": {"start": list(b.read.start), "stop": list(b.read.stop)},
                "warmup": list(b.warmup),
            }
            for b in blocks
        ],
    }


def write_plan(
    path: str | os.PathLike[str],
    volume_shape: Sequence[int],
    inference: dict[str, Any],
    tile_size: int,
    scale: float = 1.0,
) -> list[Block]:
    """Plan the blocks of a volume with the ``inference`` config and the model's tile
    size and scale, and write ``blocks.json``."""
    settings = {k: inference[k] for k in ("block_shape", "chunks", "tile_overlap", "warmup")}
    settings["tile_size"] = tile_size
    settings["scale"] = float(scale)
    blocks = plan_blocks(volume_shape, **settings)
    write_json_atomic(path, plan_to_dict(blocks, volume_shape, settings))
    return blocks


def load_plan(path: str | os.PathLike[str]) -> list[Block]:
    """Read the blocks of a ``blocks.json``."""
    data = json.loads(Path(path).read_text())
    return [
        Block(
            id=b["id"],
            index=tuple(b["index"]),
            core=Box(tuple(b["core"]["start"]), tuple(b["core"]["stop"])),
            read=Box(tuple(b["read"]["start"]), tuple(b["read"]["stop"])),
            warmup=tuple(b["warmup"]),
        )
        for b in data["blocks"]
    ]


def block_ids(path: str | os.PathLike[str]) -> list[str]:
    """Ids of the blocks listed in a ``blocks.json`` (for the workflow's fan-out)."""
    return [b.id for b in load_plan(path)]


__all__ = [
    "Block",
    "Box",
    "block_ids",
    "load_plan",
    "plan_blocks",
    "scaled_window",
    "touching_tiles",
    "write_plan",
]
