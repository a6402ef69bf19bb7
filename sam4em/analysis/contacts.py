"""Cross-class measures of objects, block by block: contact shells and nearest distances.

For a pair (a, b) of classes:

- **contact**: the *shell* of an object of a is every voxel outside the object whose
  centre lies within ``shell_nm`` of one of the object's voxel centres (Euclidean, on the
  anisotropic grid). ``contact_{b}`` is the share of the shell's voxels that belong to an
  object of b. Each block counts, for every object near it, the shell voxels inside its
  core; a read box grown by the shell width in voxels holds every object voxel that can
  reach the core, so the counts summed over blocks equal a whole-volume count.
- **distance**: ``nearest_{b}_nm`` is the distance from the object's nearest voxel centre
  to the nearest voxel centre of an object of b (0 where they overlap). Each block reads
  its core grown by ``max_distance_nm``: a distance it finds up to that bound is exact,
  and the minimum over blocks is the whole-volume minimum. Farther than the bound the
  column is empty.

Memory is bounded by a block and its halo; :func:`object_analysis` walks the blocks of the
components plan one after another.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from sam4em.analysis.settings import AnalysisSettings, flag_column
from sam4em.blocks.plan import Box, core_boxes
from sam4em.errors import InputDataError
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import INSTANCES, class_array
from sam4em.postprocess.settings import ComponentSettings


def halo_voxels(width_nm: float, voxel_nm: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis (z, y, x) that ``width_nm`` spans."""
    return tuple(int(math.floor(width_nm / float(v) + 1e-9)) for v in voxel_nm)  # type: ignore[return-value]


def _core_in(read: Box, core: Box) -> tuple[slice, slice, slice]:
    return tuple(
        slice(c0 - r0, c1 - r0)
        for c0, c1, r0 in zip(core.start, core.stop, read.start, strict=True)
    )  # type: ignore[return-value]


def shell_counts(
    labels: np.ndarray,
    partner: np.ndarray,
    core: tuple[slice, slice, slice],
    voxel_nm: Sequence[float],
    width_nm: float,
) -> dict[int, tuple[int, int]]:
    """Per object id of ``labels`` (a read box): (shell voxels, shell voxels in
    ``partner``) inside ``core`` (its slices in the read box)."""
    ids, local = np.unique(labels, return_inverse=True)
    local = local.reshape(labels.shape)
    if ids[0] != 0:
        ids, local = np.concatenate([[0], ids]), local + 1
    halo = halo_voxels(width_nm, voxel_nm)
    in_core = np.zeros(labels.shape, bool)
    in_core[core] = True
    out = {}
    for j, box in enumerate(ndimage.find_objects(local), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(0, s.start - h), min(n, s.stop + h))
            for s, h, n in zip(box, halo, labels.shape, strict=True)
        )
        own = local[grown] == j
        dist = ndimage.distance_transform_edt(~own, sampling=voxel_nm)
        shell = (dist > 0) & (dist <= width_nm + 1e-6) & in_core[grown]
        count = int(shell.sum())
        if count:
            out[int(ids[j])] = (count, int((shell & partner[grown]).sum()))
    return out


def nearest_distances(
    labels: np.ndarray,
    partner: np.ndarray,
    core: tuple[slice, slice, slice],
    voxel_nm: Sequence[float],
) -> dict[int, float]:
    """Per object id with voxels in ``core``: the distance (nm) from its core voxels to the
    nearest ``partner`` voxel of the read box (inf when the box has none)."""
    inner = labels[core]
    ids = np.unique(inner)
    ids = ids[ids > 0]
    if not len(ids):
        return {}
    if not partner.any():
        return {int(i): math.inf for i in ids}
    dist = ndimage.distance_transform_edt(~partner, sampling=voxel_nm)[core]
    nearest = ndimage.minimum(dist, labels=inner, index=ids)
    return {int(i): float(d) for i, d in zip(ids, np.atleast_1d(nearest), strict=True)}


def _read(array: object, box: Box) -> np.ndarray:
    return np.asarray(array[box.slices()])  # type: ignore[index]


def object_analysis(
    settings: AnalysisSettings,
    cls: str,
    objects: pd.DataFrame,
    arrays: dict[str, object],
    voxel_nm: Sequence[float],
    block_shape: Sequence[int],
) -> pd.DataFrame:
    """The cross-class columns of ``cls``'s objects (the ids of ``objects``): for each
    contact pair, the shell share and the flag; for each distance pair, the nearest
    distance. ``arrays`` holds each class's instance labels (zarr arrays or numpy),
    read one block of ``block_shape`` (and its halo) at a time."""
    labels = arrays[cls]
    shape = labels.shape  # type: ignore[attr-defined]
    table = pd.DataFrame({"id": objects["id"].to_numpy()})
    halo = halo_voxels(settings.shell_nm, voxel_nm)
    for _, b in (p for p in settings.contacts if p[0] == cls):
        shell = dict.fromkeys(table["id"], 0)
        touch = dict.fromkeys(table["id"], 0)
        for _, core in core_boxes(shape, block_shape):
            read = core.grown(halo, shape)
            counts = shell_counts(
                _read(labels, read), _read(arrays[b], read) > 0, _core_in(read, core),
                voxel_nm, settings.shell_nm,
            )  # fmt: skip
            for i, (n, k) in counts.items():
                shell[i] = shell.get(i, 0) + n
                touch[i] = touch.get(i, 0) + k
        n = table["id"].map(shell).to_numpy(np.float64)
        share = np.divide(table["id"].map(touch).to_numpy(np.float64), n, where=n > 0,
                          out=np.zeros_like(n))  # fmt: skip
        table[f"contact_{b}"] = share
        table[flag_column(cls, b)] = share >= settings.contact_share
    reach = tuple(h + 1 for h in halo_voxels(settings.max_distance_nm, voxel_nm))
    for _, b in (p for p in settings.distances if p[0] == cls):
        best = dict.fromkeys(table["id"], math.inf)
        for _, core in core_boxes(shape, block_shape):
            read = core.grown(reach, shape)
            found = nearest_distances(
                _read(labels, read), _read(arrays[b], read) > 0, _core_in(read, core), voxel_nm
            )
            for i, d in found.items():
                best[i] = min(best.get(i, math.inf), d)
        dist = np.array(table["id"].map(best), np.float64)
        dist[dist > settings.max_distance_nm] = np.nan
        table[f"nearest_{b}_nm"] = dist
    return table


def write_object_analysis(
    settings: AnalysisSettings,
    cls: str,
    instances: str | os.PathLike[str],
    objects_dir: str | os.PathLike[str],
    voxel_nm: Sequence[float],
    components: ComponentSettings,
    out: str | os.PathLike[str],
) -> pd.DataFrame:
    """Measure ``cls``'s objects (``objects_dir/{cls}.csv``, ids of ``instances``) against
    each partner class of its pairs and write the table to ``out`` (CSV), a block of
    ``components`` (the class's components blocks) at a time."""
    root = INSTANCES.open(instances)
    needed = [cls] + [b for a, b in settings.contacts + settings.distances if a == cls]
    arrays = {c: class_array(root, instances, c) for c in dict.fromkeys(needed)}
    path = Path(objects_dir) / f"{cls}.csv"
    if not path.is_file():
        raise InputDataError(f"{path}: not found; run the components step of '{cls}' first")
    objects = pd.read_csv(path)
    own = arrays[cls]
    block = components.block_for(own.shape, own.chunks)
    table = object_analysis(settings, cls, objects, arrays, voxel_nm, block)
    write_bytes_atomic(out, table.to_csv(index=False, float_format="%.6g").encode())
    return table
