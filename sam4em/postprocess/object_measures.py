"""Per-object confidence, uncertainty, surface and shape, summed block by block.

Every measure is a sum over an object's voxels, so the label job of each block adds up
its own labels' share (:func:`block_measures`) and the merge adds the shares of labels
that become one object, exactly as for the voxel counts: the result equals computing it
on the whole volume. What the sums are (:data:`MEASURES`), per voxel of the object:

- ``probability``: the class probability (the prediction's uint8 value / 255);
- ``entropy``: the binary entropy of that probability, in bits (0 when the model is sure,
  1 at 0.5): the uncertainty of a prediction made without test-time augmentation;
- ``faces_z``, ``faces_y``, ``faces_x``: faces towards a voxel outside the class mask
  (or outside the volume) along each axis: the voxel-face surface. A face between two
  mask voxels is never surface, as two face-adjacent mask voxels always belong to the
  same object whatever the connectivity. Each block reads a one-voxel halo for it;
- ``zz``, ``yy``, ``xx``, ``zy``, ``zx``, ``yx``: products of the voxel coordinates, for
  the second moments (the covariance of the object's voxels, hence its elongation).

:func:`object_columns` turns the sums into the table's columns, in nanometres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sam4em.blocks.plan import Box
from sam4em.predict.pred_store import binary_entropy

MEASURES = ("probability", "entropy", "faces_z", "faces_y", "faces_x",
            "zz", "yy", "xx", "zy", "zx", "yx")  # fmt: skip
_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))  # axes of zz, yy, xx, zy, zx, yx


def block_measures(
    local: np.ndarray,
    n: int,
    box: Box,
    grown_mask: np.ndarray,
    grown: Box,
    probability: np.ndarray,
) -> np.ndarray:
    """(n, len(MEASURES)) sums of labels 1..n of one block: ``local`` its labels over
    ``box``, ``grown_mask`` the class mask over ``grown`` (the box grown by one voxel,
    clipped to the volume), ``probability`` the class probability over ``box``."""
    out = np.zeros((n, len(MEASURES)))
    if n == 0:
        return out
    flat = local.ravel()
    counts = lambda w: np.bincount(flat, weights=np.ravel(w), minlength=n + 1)[1:]  # noqa: E731
    out[:, 0] = counts(probability)
    out[:, 1] = counts(binary_entropy(probability))
    # the mask on the box and one voxel around it; outside the volume is not mask
    have = zip(np.subtract(box.start, grown.start), np.subtract(grown.stop, box.stop), strict=True)
    around = np.pad(grown_mask.astype(bool), [(1 - lo, 1 - hi) for lo, hi in have])
    inner = tuple(slice(1, -1) for _ in range(3))
    for axis in range(3):
        before, after = list(inner), list(inner)
        before[axis], after[axis] = slice(0, -2), slice(2, None)
        open_faces = (~around[tuple(before)]).astype(np.int64) + ~around[tuple(after)]
        out[:, 2 + axis] = counts(open_faces)
    where = np.nonzero(local)
    labels = local[where]
    coords = [w + s for w, s in zip(where, box.start, strict=True)]
    for k, (a, b) in enumerate(_PAIRS):
        weights = coords[a].astype(np.float64) * coords[b]
        out[:, 5 + k] = np.bincount(labels, weights=weights, minlength=n + 1)[1:]
    return out


def object_columns(
    table: pd.DataFrame, voxel_nm: Sequence[float], shape: Sequence[int]
) -> pd.DataFrame:
    """The object table's confidence, uncertainty, surface and shape columns, from the
    merged sums of :data:`MEASURES` (which it drops) and the voxel counts, bounding boxes
    and centroids (in voxels) of a volume of ``shape`` with ``voxel_nm`` voxels."""
    table = table.copy()
    vz, vy, vx = (float(v) for v in voxel_nm)
    voxels = table["voxels"].to_numpy(np.float64)
    table["confidence"] = table.pop("probability") / voxels
    table["uncertainty"] = table.pop("entropy") / voxels
    faces = np.stack([table.pop(f"faces_{a}").to_numpy() for a in "zyx"], axis=1)
    surface = faces @ np.array([vy * vx, vz * vx, vz * vy])
    table["surface_nm2"] = surface
    table["z_extent_nm"] = (table["bbox_z1"] - table["bbox_z0"]) * vz
    # covariance of the voxel centres in nm (a voxel's own extent, 1/12 of its side
    # squared per axis, keeps one-voxel objects finite)
    scale = np.array([vz, vy, vx])
    mean = table[["centroid_z", "centroid_y", "centroid_x"]].to_numpy()
    cov = np.zeros((len(table), 3, 3))
    for name, (a, b) in zip(MEASURES[5:], _PAIRS, strict=True):
        c = table.pop(name).to_numpy() / voxels - mean[:, a] * mean[:, b]
        cov[:, a, b] = cov[:, b, a] = c * scale[a] * scale[b]
    cov += np.eye(3)[None] * (scale**2 / 12)[None, :]
    eig = np.clip(np.linalg.eigvalsh(cov), 0.0, None) if len(table) else np.zeros((0, 3))
    table["elongation"] = np.sqrt(eig[:, 2] / eig[:, 0]) if len(table) else []
    volume = voxels * vz * vy * vx
    table["sphericity"] = np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / surface
    lo = table[["bbox_z0", "bbox_y0", "bbox_x0"]].to_numpy()
    hi = table[["bbox_z1", "bbox_y1", "bbox_x1"]].to_numpy()
    table["truncated"] = ((lo == 0) | (hi == np.asarray(shape)[None])).any(axis=1)
    return table
