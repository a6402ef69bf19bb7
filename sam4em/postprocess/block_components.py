"""3D connected components of a binary volume, one block at a time, in three phases.

The phases are what the workflow runs as jobs (map / reduce / map, see
:mod:`sam4em.postprocess.instances`); :func:`blockwise_components` runs them in one
process.

1. **Label** (per block, :func:`label_block`): ``cc3d`` labels the block 1..n; the
   block's :class:`BlockSummary` keeps per-label voxel counts, bounding boxes and
   coordinate sums, and the labels on its six boundary planes.
2. **Merge** (once, :func:`merge_blocks`): labels of neighbouring blocks that touch across
   a face, an edge or a corner (:func:`seam_pairs`, from the boundary planes alone) are
   merged with one sparse-graph pass; objects below the size filters are dropped. Its
   memory grows with the number of labels, not voxels.
3. **Relabel** (per block, :func:`relabel_block`): block labels become final ids 1..K.

Provisional ids are global: block ``b``'s label ``l`` is ``offsets[b] + l``, blocks in C
order, so final ids come out in order of first appearance (block order, then C order
within the block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
import pandas as pd

from sam4em.blocks.plan import Box, core_boxes
from sam4em.postprocess.neighbours import half_offsets, touching_pairs
from sam4em.postprocess.object_measures import MEASURES, block_measures
from sam4em.postprocess.union_find import merged_roots

SIDES = tuple(f"{axis}{side}" for axis in "zyx" for side in (0, 1))  # boundary plane names


@dataclass(frozen=True)
class BlockSummary:
    """What the merge needs of one labelled block: per-label statistics (label ``l`` is
    row ``l - 1``; coordinates global) and the labels on its six boundary planes."""

    n: int
    voxels: np.ndarray  # (n,) int64
    lo: np.ndarray  # (n, 3) bounding box start
    hi: np.ndarray  # (n, 3) bounding box stop (exclusive)
    sums: np.ndarray  # (n, 3) coordinate sums (centroid = sums / voxels)
    faces: dict[str, np.ndarray]  # SIDES -> the plane, kept 3D (extent 1 on its axis)
    measures: np.ndarray  # (n, len(MEASURES)) sums of sam4em.postprocess.object_measures

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array form (for ``np.savez``)."""
        arrays = {"n": np.array(self.n), "voxels": self.voxels, "lo": self.lo, "hi": self.hi}
        arrays |= {"sums": self.sums, "measures": self.measures}
        return arrays | {f"face_{s}": self.faces[s] for s in SIDES}

    @classmethod
    def from_arrays(cls, arrays: Any) -> BlockSummary:
        """Inverse of :meth:`to_arrays` (also takes an open ``np.load`` file)."""
        faces = {s: np.asarray(arrays[f"face_{s}"]) for s in SIDES}
        parts = (np.asarray(arrays[k]) for k in ("voxels", "lo", "hi", "sums"))
        return cls(int(arrays["n"]), *parts, faces=faces, measures=np.asarray(arrays["measures"]))


def label_block(
    mask: np.ndarray,
    box: Box,
    connectivity: int,
    measure: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, BlockSummary]:
    """Labels 1..n of the block ``box`` of a volume, given its ``mask``, and its summary;
    ``measure(labels, n)`` gives its (n, len(MEASURES)) sums (zeros without it)."""
    # uint8, not bool: cc3d mis-sizes its union-find for some small bool inputs
    local, n = cc3d.connected_components(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=connectivity, return_N=True
    )
    stats = cc3d.statistics(local, no_slice_conversion=True)
    voxels = stats["voxel_counts"][1 : n + 1].astype(np.int64)
    bounds = stats["bounding_boxes"][1 : n + 1].astype(np.int64).reshape(n, 3, 2)
    start = np.asarray(box.start, np.int64)
    sums = (stats["centroids"][1 : n + 1] + start) * voxels[:, None]
    faces = {}
    for axis, name in enumerate("zyx"):
        for side, index in ((0, slice(0, 1)), (1, slice(-1, None))):
            faces[f"{name}{side}"] = local[(slice(None),) * axis + (index,)].copy()
    measures = measure(local, n) if measure is not None else np.zeros((n, len(MEASURES)))
    summary = BlockSummary(
        n, voxels, bounds[:, :, 0] + start, bounds[:, :, 1] + start + 1, sums, faces, measures
    )
    return local, summary


def seam_pairs(
    lower: BlockSummary, upper: BlockSummary, step: Sequence[int], connectivity: int
) -> np.ndarray:
    """(k, 2) pairs (label in ``lower``, label in ``upper``) that touch, where ``upper``
    is the block ``step`` (one of :func:`~sam4em.postprocess.neighbours.half_offsets`)
    away on the block grid. Only boundary planes are read: the voxels of ``lower`` on its
    far side along every axis the step moves on, those of ``upper`` on its near side,
    placed side by side in a seam array two voxels thick on those axes."""
    moved = [axis for axis in range(3) if step[axis]]
    first = moved[0]

    def boundary(block: BlockSummary, far: bool) -> np.ndarray:
        side = {1: far, -1: not far}
        plane = block.faces[f"{'zyx'[first]}{int(side[step[first]])}"]
        index = [slice(None)] * 3
        for axis in moved[1:]:
            index[axis] = slice(-1, None) if side[step[axis]] else slice(0, 1)
        return plane[tuple(index)]

    a, b = boundary(lower, True), boundary(upper, False)
    seam = np.zeros([2 if axis in moved else a.shape[axis] for axis in range(3)], np.int64)
    at_a = [slice(None)] * 3
    at_b = [slice(None)] * 3
    for axis in moved:  # lower sits first along an axis the step climbs, last where it falls
        at_a[axis], at_b[axis] = (slice(0, 1), slice(1, 2))[:: step[axis]]
    seam[tuple(at_a)] = a
    seam[tuple(at_b)] = np.where(b > 0, b.astype(np.int64) + lower.n, 0)
    pairs = touching_pairs(seam, connectivity)
    pairs = pairs[(pairs[:, 0] <= lower.n) & (pairs[:, 1] > lower.n)]
    return np.stack([pairs[:, 0], pairs[:, 1] - lower.n], axis=1)


def grid_steps(connectivity: int) -> list[tuple[int, int, int]]:
    """Block-grid steps to the neighbours a block can touch (one of each pair)."""
    return half_offsets(connectivity)


def block_contacts(
    index: int,
    grid: Sequence[int],
    summaries: Callable[[int], BlockSummary],
    connectivity: int,
) -> np.ndarray:
    """(k, 4) rows (block a, label a, block b, label b) of the labels of block ``index``
    (flat, C order on a block grid of ``grid`` blocks) touching those of its neighbours
    one :func:`grid_steps` step away; ``summaries(i)`` gives block ``i``'s summary."""
    position = np.unravel_index(index, tuple(grid))
    found = [np.zeros((0, 4), np.int64)]
    for step in grid_steps(connectivity):
        other = [p + s for p, s in zip(position, step, strict=True)]
        if any(o < 0 or o >= g for o, g in zip(other, grid, strict=True)):
            continue
        j = int(np.ravel_multi_index(other, tuple(grid)))
        pairs = seam_pairs(summaries(index), summaries(j), step, connectivity)
        rows = np.empty((len(pairs), 4), np.int64)
        rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = index, pairs[:, 0], j, pairs[:, 1]
        found.append(rows)
    return np.concatenate(found)


@dataclass(frozen=True)
class IdTable:
    """Provisional id offsets per block and the final id of every provisional id
    (0 = background or filtered out)."""

    offsets: np.ndarray  # (blocks + 1,) block b's labels are offsets[b] + 1 .. offsets[b + 1]
    final: np.ndarray  # (offsets[-1] + 1,) uint64

    def block_lookup(self, index: int) -> np.ndarray:
        """Block ``index``'s label -> final id (position 0 maps background to 0)."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return np.concatenate([[0], self.final[lo + 1 : hi + 1]]).astype(np.uint64)


@dataclass(frozen=True)
class Merged:
    """The merge's result: the final ids and the object table."""

    ids: IdTable
    table: pd.DataFrame


def merge_blocks(
    summaries: Sequence[BlockSummary],
    contacts: np.ndarray,
    min_voxels: int = 0,
    min_z: int = 0,
) -> Merged:
    """Merge touching labels (``contacts``: rows of :func:`block_contacts`) into objects
    and drop those with fewer than ``min_voxels`` voxels or spanning fewer than ``min_z``
    slices; the rest get ids 1..K."""
    offsets = np.concatenate([[0], np.cumsum([s.n for s in summaries])]).astype(np.int64)
    total = int(offsets[-1])
    contacts = np.asarray(contacts, np.int64).reshape(-1, 4)
    pairs = np.stack(
        [offsets[contacts[:, 0]] + contacts[:, 1], offsets[contacts[:, 2]] + contacts[:, 3]], 1
    )
    roots = merged_roots(total, pairs)
    voxels = np.zeros(total + 1, np.int64)
    lo = np.full((total + 1, 3), np.iinfo(np.int64).max)
    hi = np.zeros((total + 1, 3), np.int64)
    sums = np.zeros((total + 1, 3))
    measures = np.zeros((total + 1, len(MEASURES)))
    if total:
        r = roots[1:]
        np.add.at(voxels, r, np.concatenate([s.voxels for s in summaries]))
        np.minimum.at(lo, r, np.concatenate([s.lo for s in summaries]))
        np.maximum.at(hi, r, np.concatenate([s.hi for s in summaries]))
        np.add.at(sums, r, np.concatenate([s.sums for s in summaries]))
        np.add.at(measures, r, np.concatenate([s.measures for s in summaries]))
    is_root = (roots == np.arange(total + 1)) & (voxels > 0)
    keep = is_root & (voxels >= min_voxels) & ((hi[:, 0] - lo[:, 0]) >= min_z)
    kept = np.flatnonzero(keep)
    final_of_root = np.zeros(total + 1, np.uint64)
    final_of_root[kept] = np.arange(1, len(kept) + 1, dtype=np.uint64)
    centroid = sums[kept] / voxels[kept, None]
    table = pd.DataFrame(
        {
            "id": np.arange(1, len(kept) + 1),
            "voxels": voxels[kept],
            **{f"bbox_{a}0": lo[kept, i] for i, a in enumerate("zyx")},
            **{f"bbox_{a}1": hi[kept, i] for i, a in enumerate("zyx")},
            **{f"centroid_{a}": centroid[:, i] for i, a in enumerate("zyx")},
            **{name: measures[kept, i] for i, name in enumerate(MEASURES)},
        }
    )
    return Merged(IdTable(offsets, final_of_root[roots]), table)


def read_with_measures(
    read_mask: Callable[[Box], np.ndarray],
    box: Box,
    shape: Sequence[int],
    read_probability: Callable[[Box], np.ndarray] | None,
) -> tuple[np.ndarray, Callable[[np.ndarray, int], np.ndarray] | None]:
    """A block's mask and, given ``read_probability``, the ``measure`` of its labels for
    :func:`label_block` (the mask is read one voxel beyond the block for the surface)."""
    if read_probability is None:
        return read_mask(box), None
    grown = box.grown((1, 1, 1), shape)
    grown_mask = read_mask(grown)
    probability = read_probability(box)

    def measure(local: np.ndarray, n: int) -> np.ndarray:
        return block_measures(local, n, box, grown_mask, grown, probability)

    return grown_mask[box.within(grown)], measure


def relabel_block(local: np.ndarray, lookup: np.ndarray, dtype: Any) -> np.ndarray:
    """A block's labels turned into final ids with its :meth:`IdTable.block_lookup`."""
    return lookup.astype(dtype)[local]  # (np.take would copy local as int64 indices)


def blockwise_components(
    read_mask: Callable[[Box], np.ndarray],
    shape: Sequence[int],
    block_shape: Sequence[int],
    connectivity: int,
    scratch: Any,
    out: Any,
    min_voxels: int = 0,
    min_z: int = 0,
    progress: Callable[[str], None] | None = None,
    read_probability: Callable[[Box], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Label the mask given by ``read_mask(box)`` into ``out``; returns the object table.

    The three phases in one process. Blocks are the cores of the block plan's grid
    (:func:`sam4em.blocks.plan.core_boxes`); ``read_mask`` gets a
    :class:`~sam4em.blocks.plan.Box`. ``scratch`` (block labels, any integer type of at
    least 32 bits) and ``out`` are arrays of ``shape`` supporting box reads and writes
    (numpy or zarr). Objects with fewer than ``min_voxels`` voxels or spanning fewer
    than ``min_z`` slices are removed; ids are 1..K in order of first appearance. With
    ``read_probability`` (the class probability of a box) the table also has the sums of
    :data:`~sam4em.postprocess.object_measures.MEASURES` (zeros without it).
    """
    cores = core_boxes(shape, block_shape)
    grid = [max(index[axis] for index, _ in cores) + 1 for axis in range(3)]
    summaries = []
    for _, box in cores:
        mask, measure = read_with_measures(read_mask, box, shape, read_probability)
        local, summary = label_block(mask, box, connectivity, measure)
        scratch[box.slices()] = local
        summaries.append(summary)
        if progress:
            progress("label")
    contacts = [
        block_contacts(i, grid, summaries.__getitem__, connectivity) for i in range(len(cores))
    ]
    merged = merge_blocks(summaries, np.concatenate(contacts), min_voxels, min_z)
    for i, (_, box) in enumerate(cores):
        local = np.asarray(scratch[box.slices()]).astype(np.int64)
        out[box.slices()] = relabel_block(local, merged.ids.block_lookup(i), out.dtype)
        if progress:
            progress("relabel")
    return merged.table
