"""The ``components`` step: instances of one class from ``pred.zarr``, and their table.

The class's mask (probabilities at or above its threshold) is cleaned up
(:mod:`sam4em.postprocess.cleanup`) before labelling, and objects below its smallest
size (``min_voxels`` / ``min_volume_nm3``) or z extent are dropped. Writes
``instances.zarr/{class}`` (uint32, or uint64 beyond 2^32 - 1 objects; viewer levels by
2x2 mode, :mod:`sam4em.io.pyramid`) and
``objects/{class}.csv`` (id, voxels, volume in nm^3, bounding box, centroid in voxels
and nm). A uint64 scratch array next to the output holds the provisional labels and is
removed at the end; the class array appears under its final name only when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from sam4em.blocks.plan import core_boxes
from sam4em.io.atomic import (
    create_directory_once,
    partial_name,
    remove_leftovers,
    write_bytes_atomic,
)
from sam4em.io.pyramid import write_pyramid
from sam4em.io.zarr_store import (
    LEVEL0,
    PREDICTION,
    class_array,
    create_array,
    open_group,
)
from sam4em.postprocess.block_components import blockwise_components
from sam4em.postprocess.cleanup import cleaned_reader
from sam4em.postprocess.settings import ComponentSettings
from sam4em.progress import progress


def components_for_class(
    settings: ComponentSettings,
    pred: str | os.PathLike[str],
    cls: str,
    out: str | os.PathLike[str],
    objects_csv: str | os.PathLike[str],
) -> pd.DataFrame:
    """Threshold, label block-wise, filter; write the instance array and object table."""
    pred_root = PREDICTION.open(pred)
    probs = class_array(pred_root, pred, cls)
    shape, chunks = probs.shape, probs.chunks
    level = settings.level(cls, pred_root.attrs.get("thresholds"))
    block = settings.block_shape
    out = Path(out)
    voxel = list(pred_root.attrs.get("voxel_size_nm", [1.0, 1.0, 1.0]))

    def build_root(tmp: Path) -> None:
        open_group(tmp, mode="w").attrs["sam4em"] = {"classes": [], "source": str(pred)}

    create_directory_once(out, build_root)
    root = open_group(out, mode="r+")
    for marker in ("partial", "scratch"):  # what a killed run of this class left
        remove_leftovers(out / cls, marker)
    scratch_name = partial_name(out / cls, "scratch").name
    scratch = create_array(root, scratch_name, shape, chunks, "uint64")
    final_name = partial_name(out / cls).name
    group = root.create_group(final_name)
    n_boxes = len(core_boxes(shape, block))
    try:
        # uint32 covers any volume below 2^32 voxels, and object counts below that
        dtype = "uint32" if int(np.prod(shape)) < 2**32 else "uint64"
        target = create_array(group, LEVEL0, shape, chunks, dtype)
        cleanup, smallest = settings.cleanup(voxel), settings.min_voxels_for(voxel)
        read_mask = cleaned_reader(
            lambda box: np.asarray(probs[box.slices()]) >= level, shape, cleanup
        )
        with progress(total=3 * n_boxes, desc=f"components {cls}", unit="block") as bar:
            table = blockwise_components(
                read_mask,
                shape,
                block,
                settings.connectivity,
                scratch,
                target,
                min_voxels=smallest,
                min_z=settings.min_z,
                progress=lambda _: bar.update(1),
            )
        write_pyramid(group, f"{cls} objects", voxel, "mode")
        group.attrs["sam4em"] = {
            "threshold": level / 255,
            "objects": len(table),
            "min_voxels": smallest,
            "open_px": list(cleanup.open_px),
            "close_px": list(cleanup.close_px),
        }
    except BaseException:
        shutil.rmtree(out / final_name, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(out / scratch_name, ignore_errors=True)
    if (out / cls).exists():
        shutil.rmtree(out / cls)
    (out / final_name).rename(out / cls)
    table = with_physical_units(table, voxel)
    write_bytes_atomic(objects_csv, table.to_csv(index=False).encode())
    return table


def with_physical_units(table: pd.DataFrame, voxel_nm: list[float]) -> pd.DataFrame:
    """Add ``volume_nm3`` and centroids in nm to an object table."""
    table = table.copy()
    table.insert(2, "volume_nm3", table["voxels"] * float(np.prod(voxel_nm)))
    for i, axis in enumerate("zyx"):
        table[f"centroid_{axis}_nm"] = table[f"centroid_{axis}"] * float(voxel_nm[i])
    return table
