"""3D connected components of a binary volume, one block at a time.

Pass 1 labels each block with ``cc3d`` and shifts its labels past those of the blocks
before it (globally unique), collecting per-label voxel counts, bounding boxes and
coordinate sums. Pass 2 reads each block grown by one voxel and records which labels of
neighbouring blocks touch (for the chosen connectivity, scanning only the faces); one
sparse-graph pass merges them. Pass 3 relabels block by block to consecutive ids of the
objects that pass the size filters.
Only one block (plus a one-voxel shell) is in memory at a time; the per-label tables grow
with the number of objects, not with the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cc3d
import numpy as np
import pandas as pd
from scipy import ndimage

from sam4em.blocks.plan import Box, core_boxes
from sam4em.postprocess.neighbours import shell_pairs
from sam4em.postprocess.union_find import merged_roots


@dataclass
class _Stats:
    """Per-label tables, index = global label (0 unused)."""

    voxels: list[np.ndarray]
    lo: list[np.ndarray]  # (n, 3) bbox start
    hi: list[np.ndarray]  # (n, 3) bbox stop (exclusive)
    sums: list[np.ndarray]  # (n, 3) coordinate sums

    def add_block(self, local: np.ndarray, n: int, box: Box) -> None:
        flat = local.ravel()
        self.voxels.append(np.bincount(flat, minlength=n + 1)[1:].astype(np.int64))
        sums = np.zeros((n, 3))
        for ax in range(3):
            coord = np.arange(box.start[ax], box.stop[ax], dtype=np.float64)
            shape = [1, 1, 1]
            shape[ax] = -1
            weights = np.broadcast_to(coord.reshape(shape), local.shape).ravel()
            sums[:, ax] = np.bincount(flat, weights=weights, minlength=n + 1)[1:]
        self.sums.append(sums)
        lo, hi = np.zeros((n, 3), np.int64), np.zeros((n, 3), np.int64)
        for i, sl in enumerate(ndimage.find_objects(local, max_label=n)):
            if sl is None:
                continue
            lo[i] = [s.start + b for s, b in zip(sl, box.start, strict=True)]
            hi[i] = [s.stop + b for s, b in zip(sl, box.start, strict=True)]
        self.lo.append(lo)
        self.hi.append(hi)


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
) -> pd.DataFrame:
    """Label the mask given by ``read_mask(box)`` into ``out``; returns the object table.

    Blocks are the cores of the block plan's grid (:func:`sam4em.blocks.plan.core_boxes`);
    ``read_mask`` gets a :class:`~sam4em.blocks.plan.Box`. ``scratch`` (uint64) and ``out``
    are arrays of ``shape`` supporting box reads and
    writes (numpy or zarr). Objects with fewer than ``min_voxels`` voxels or spanning
    fewer than ``min_z`` slices are removed. Ids are 1..K in order of first appearance
    (block order, then C order within the block).
    """
    boxes = [core for _, core in core_boxes(shape, block_shape)]
    stats = _Stats([], [], [], [])
    total = 0
    for box in boxes:
        # uint8, not bool: cc3d mis-sizes its union-find for some small bool inputs
        local, n = cc3d.connected_components(
            np.ascontiguousarray(read_mask(box), dtype=np.uint8),
            connectivity=connectivity,
            return_N=True,
        )
        stats.add_block(local, n, box)
        labels = local.astype(np.uint64)
        labels[labels > 0] += np.uint64(total)
        scratch[box.slices()] = labels
        total += n
        if progress:
            progress("label")
    contacts = []
    for box in boxes:
        grown = box.grown(1, shape)
        labels = np.asarray(scratch[grown.slices()])
        contacts.append(shell_pairs(labels, box.within(grown), connectivity))
        if progress:
            progress("merge")
    roots = merged_roots(total, np.concatenate(contacts))
    voxels = np.zeros(total + 1, np.int64)
    lo = np.full((total + 1, 3), np.iinfo(np.int64).max)
    hi = np.zeros((total + 1, 3), np.int64)
    sums = np.zeros((total + 1, 3))
    if total:
        r = roots[1:]
        np.add.at(voxels, r, np.concatenate(stats.voxels))
        np.minimum.at(lo, r, np.concatenate(stats.lo))
        np.maximum.at(hi, r, np.concatenate(stats.hi))
        np.add.at(sums, r, np.concatenate(stats.sums))
    is_root = (roots == np.arange(total + 1)) & (voxels > 0)
    keep = is_root & (voxels >= min_voxels) & ((hi[:, 0] - lo[:, 0]) >= min_z)
    kept = np.flatnonzero(keep)
    final = np.zeros(total + 1, np.uint64)
    final[kept] = np.arange(1, len(kept) + 1, dtype=np.uint64)
    lookup = final[roots]
    for box in boxes:
        index = box.slices()
        out[index] = lookup[np.asarray(scratch[index]).astype(np.int64)].astype(out.dtype)
        if progress:
            progress("relabel")
    centroid = sums[kept] / voxels[kept, None]
    return pd.DataFrame(
        {
            "id": np.arange(1, len(kept) + 1),
            "voxels": voxels[kept],
            **{f"bbox_{a}0": lo[kept, i] for i, a in enumerate("zyx")},
            **{f"bbox_{a}1": hi[kept, i] for i, a in enumerate("zyx")},
            **{f"centroid_{a}": centroid[:, i] for i, a in enumerate("zyx")},
        }
    )
