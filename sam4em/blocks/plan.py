"""The block plan: which part of the volume each inference job reads and writes.

Vocabulary (after daisy): a block's *core* is the box it writes; its *read* box is the
core grown by an XY halo; its *warm-up* slices are up to W slices just before the core
in z, run through the model only to fill the memory bank. Cores tile the volume exactly
and start on the output chunk grid, so parallel jobs never write the same chunk.

The halo is not a fixed width: model tiles sit on one lattice over the whole volume
(:class:`~sam4em.tiling.lattice.Lattice`), and a block reads exactly the lattice tiles
that touch its core. Every core voxel is thus
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sam4em.errors import InputDataError
from sam4em.io.atomic import write_json_atomic
from sam4em.io.zarr_store import chunk_misfit
from sam4em.tiling.lattice import Lattice
from sam4em.tiling.settings import TilingSettings

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

    def grown(self, margin: int | Sequence[int], shape: Sequence[int]) -> Box:
        """The box grown by ``margin`` voxels on every side (one value, or one per axis),
        clipped to a volume of ``shape``."""
        m = [margin] * 3 if isinstance(margin, int) else list(margin)
        start = tuple(max(0, a - g) for a, g in zip(self.start, m, strict=True))
        stop = tuple(min(n, b + g) for b, n, g in zip(self.stop, shape, m, strict=True))
        return Box(start, stop)  # type: ignore[arg-type]

    def within(self, outer: Box) -> tuple[slice, slice, slice]:
        """Index of this box inside an array that holds ``outer``."""
        return tuple(  # type: ignore[return-value]
            slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, outer.start, strict=True)
        )


@dataclass(frozen=True)
class Block:
    """One inference job's geometry."""

    id: str
    index: Vec3
    core: Box
    read: Box
    warmup: tuple[int, int]  # z range [start, stop) run before the core, outputs dropped


def _vec3(values: Sequence[int], name: str, minimum: int = 1) -> Vec3:
    """Three integers (z, y, x) of at least ``minimum``: positive for every extent the
    plan handles, non-negative for positions."""
    if len(values) != 3 or any(int(v) != v for v in values):
        raise ValueError(f"{name} must be three integers (z, y, x), got {values!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {values!r}")
    return (int(values[0]), int(values[1]), int(values[2]))


def core_boxes(shape: Sequence[int], block_shape: Sequence[int]) -> list[tuple[Vec3, Box]]:
    """(index, core) of the blocks of ``block_shape`` tiling a volume of ``shape`` (the
    last ones along an axis clipped), in C order."""
    shape, block_shape = _vec3(shape, "shape"), _vec3(block_shape, "block_shape")
    counts = [-(-s // b) for s, b in zip(shape, block_shape, strict=True)]
    cores = []
    for index in itertools.product(*(range(n) for n in counts)):
        start = tuple(i * b for i, b in zip(index, block_shape, strict=True))
        stop = tuple(min(a + b, s) for a, b, s in zip(start, block_shape, shape, strict=True))
        cores.append((index, Box(start, stop)))  # type: ignore[arg-type]
    return cores


def named_cores(shape: Sequence[int], block_shape: Sequence[int]) -> list[tuple[str, Vec3, Box]]:
    """(id, index, core) of :func:`core_boxes`, ids like ``z00y01x02`` (zero-padded to
    the widest index): the names of block jobs and of their files."""
    cores = core_boxes(shape, block_shape)
    width = len(str(max(max(index) for index, _ in cores)))
    return [
        ("z{:0{w}d}y{:0{w}d}x{:0{w}d}".format(*index, w=width), index, core)
        for index, core in cores
    ]


# Default block shapes (where the config leaves block_shape null). Inference: whole
# planes up to 4096 x 4096 (a CPU block job then stays near 2 GB: the plane in float32
# per class, the read stack and the model), and at least 10 x warmup slices deep, so
# the warm-up is at most a tenth of the slices a job runs. Components: blocks up to
# 64 x 1024 x 1024 (a label job holds the block's mask, labels and statistics).
INFERENCE_PLANE = 4096
INFERENCE_MIN_DEPTH = 32
COMPONENTS_BLOCK = (64, 1024, 1024)


def default_block_shape(shape: Sequence[int], chunks: Sequence[int], most: Sequence[int]) -> Vec3:
    """The block shape of at most ``most`` voxels per axis (never more than the volume)
    rounded up to whole ``chunks``."""
    shape, chunks, most = (_vec3(v, n) for v, n in ((shape, "shape"), (chunks, "chunks"),
                                                    (most, "most")))  # fmt: skip
    return tuple(-(-min(s, m) // c) * c for s, c, m in zip(shape, chunks, most, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class PlanSettings:
    """What a block plan is made from: block and chunk shapes, the model-tile lattice on
    the model grid, the warm-up depth and the model's scale (``tiling.scale``). A
    ``block_shape`` of None is chosen from the volume (:meth:`resolved`)."""

    block_shape: Vec3 | None
    chunks: Vec3
    lattice: Lattice
    warmup: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        _vec3(self.chunks, "chunks")
        if self.warmup < 0:
            raise ValueError("warmup must not be negative")
        if self.block_shape is None:
            return
        _vec3(self.block_shape, "block_shape")
        if why := chunk_misfit(self.block_shape, self.chunks):
            raise ValueError(f"block_shape: {why}")

    def resolved(self, shape: Sequence[int]) -> PlanSettings:
        """These settings with the block shape for a volume of ``shape`` filled in:
        whole planes up to ``INFERENCE_PLANE`` and at least ``max(INFERENCE_MIN_DEPTH,
        10 x warmup)`` slices deep (or the whole depth)."""
        if self.block_shape is not None:
            return self
        depth = max(INFERENCE_MIN_DEPTH, 10 * self.warmup)
        most = (depth, INFERENCE_PLANE, INFERENCE_PLANE)
        return replace(self, block_shape=default_block_shape(shape, self.chunks, most))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PlanSettings:
        """The plan settings of a validated project config."""
        inf = config["inference"]
        block = inf["block_shape"]
        return cls(
            block_shape=None if block is None else _vec3(block, "block_shape"),
            chunks=_vec3(inf["chunks"], "chunks"),
            lattice=Lattice.from_overlap(config["model"]["img_size"], inf["tile_overlap"]),
            warmup=int(inf["warmup"]),
            scale=TilingSettings.from_config(config).scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """The form stored in ``blocks.json``."""
        return {
            "block_shape": None if self.block_shape is None else list(self.block_shape),
            "chunks": list(self.chunks),
            "tile_size": self.lattice.tile,
            "tile_overlap": self.lattice.overlap,
            "warmup": self.warmup,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanSettings:
        """Inverse of :meth:`to_dict`."""
        return cls(
            block_shape=_vec3(data["block_shape"], "block_shape"),
            chunks=_vec3(data["chunks"], "chunks"),
            lattice=Lattice.from_overlap(data["tile_size"], data["tile_overlap"]),
            warmup=int(data["warmup"]),
            scale=float(data.get("scale", 1.0)),
        )


def plan_blocks(shape: Sequence[int], settings: PlanSettings) -> list[Block]:
    """Cut a volume of ``shape`` into blocks whose cores are multiples of the chunks;
    read boxes follow the model-tile lattice at the plan's scale."""
    settings = settings.resolved(shape)
    lattice, scale = settings.lattice, settings.scale
    blocks = []
    for name, index, core in named_cores(shape, settings.block_shape):  # type: ignore[arg-type]
        (z0, y0, x0), (z1, y1, x1) = core.start, core.stop
        _, ys = lattice.window(shape[1], scale, y0, y1)
        _, xs = lattice.window(shape[2], scale, x0, x1)
        blocks.append(
            Block(
                id=name,
                index=index,
                core=core,
                read=Box((z0, ys[0], xs[0]), (z1, ys[1], xs[1])),
                warmup=(max(0, z0 - settings.warmup), z0),
            )
        )
    return blocks


def plan_to_dict(
    blocks: list[Block], shape: Sequence[int], settings: PlanSettings
) -> dict[str, Any]:
    """JSON-ready form of a plan, with the settings that made it."""
    return {
        "volume_shape": list(shape),
        "settings": settings.to_dict(),
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


def tile_forwards(shape: Sequence[int], settings: PlanSettings) -> int:
    """Model tile forwards a plan's jobs make (one way through z): per block, its warm-up
    and core slices times the lattice tiles of its window."""
    total = 0
    for b in plan_blocks(shape, settings):
        ys, _ = settings.lattice.window(shape[1], settings.scale, b.core.start[1], b.core.stop[1])
        xs, _ = settings.lattice.window(shape[2], settings.scale, b.core.start[2], b.core.stop[2])
        total += (b.core.stop[0] - b.warmup[0]) * len(ys) * len(xs)
    return total


def redundancy(shape: Sequence[int], settings: PlanSettings) -> float:
    """:func:`tile_forwards` of the plan over that of one block holding the whole volume
    (1.0: no tile or warm-up slice is computed twice)."""
    whole = replace(settings, block_shape=default_block_shape(shape, settings.chunks, shape))
    return tile_forwards(shape, settings) / tile_forwards(shape, whole)


def write_plan(
    path: str | os.PathLike[str], volume_shape: Sequence[int], settings: PlanSettings
) -> list[Block]:
    """Plan the blocks of a volume and write ``blocks.json`` (with the block shape used)."""
    settings = settings.resolved(volume_shape)
    blocks = plan_blocks(volume_shape, settings)
    write_json_atomic(path, plan_to_dict(blocks, volume_shape, settings))
    return blocks


@dataclass(frozen=True)
class PlanFile:
    """What a ``blocks.json`` holds."""

    volume_shape: Vec3
    settings: PlanSettings
    blocks: list[Block]


def _block(b: dict[str, Any]) -> Block:
    def box(d: dict[str, Any]) -> Box:
        return Box(_vec3(d["start"], "start", 0), _vec3(d["stop"], "stop", 0))

    warmup = (int(b["warmup"][0]), int(b["warmup"][1]))
    return Block(
        str(b["id"]), _vec3(b["index"], "index", 0), box(b["core"]), box(b["read"]), warmup
    )


def read_plan(path: str | os.PathLike[str]) -> PlanFile:
    """Read a ``blocks.json``; an InputDataError when it is missing or is not a block
    plan (the ``plan-blocks`` step writes it)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: block plan not found (run the plan-blocks step first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PlanFile(
            volume_shape=_vec3(data["volume_shape"], "volume_shape"),
            settings=PlanSettings.from_dict(data["settings"]),
            blocks=[_block(b) for b in data["blocks"]],
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputDataError(
            f"{path}: not a block plan written by plan-blocks ({type(exc).__name__}: {exc}); "
            "delete it and rerun plan-blocks"
        ) from None


def load_settings(path: str | os.PathLike[str]) -> PlanSettings:
    """The settings a ``blocks.json`` was planned with."""
    return read_plan(path).settings


def load_plan(path: str | os.PathLike[str]) -> list[Block]:
    """The blocks of a ``blocks.json`` (see :func:`read_plan`)."""
    return read_plan(path).blocks


def block_ids(path: str | os.PathLike[str]) -> list[str]:
    """Ids of the blocks listed in a ``blocks.json`` (for the workflow's fan-out)."""
    return [b.id for b in load_plan(path)]


__all__ = [
    "Block",
    "Box",
    "PlanFile",
    "PlanSettings",
    "block_ids",
    "core_boxes",
    "default_block_shape",
    "load_plan",
    "load_settings",
    "named_cores",
    "plan_blocks",
    "read_plan",
    "redundancy",
    "tile_forwards",
    "write_plan",
]
