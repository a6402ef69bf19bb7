"""The prediction store ``pred.zarr``: one OME-NGFF image group per class, and one per
class of its uncertainty.

Layout: ``pred.zarr/{class}/0`` holds per-class probabilities as uint8 (0..255, that is
round(255 p)), chunked like ``inference.chunks`` so block cores own whole chunks;
``pred.zarr/uncertainty/{class}/0`` the voxel's uncertainty, round(255 H(p)) with H the
binary entropy in bits of the stored probability (:func:`uncertainty_of`);
viewer levels ``{class}/1``, ``{class}/2``, ... (2x2 means, each level half the one
before, :mod:`sam4em.io.pyramid`) are written by the block jobs as far as a block covers
whole chunks of them, and the rest by ``stitch``. ``stitch`` also marks
the store ``complete`` once every block is done from one model and one import of the
volume; a block job that writes into it clears the mark, and the later stages refuse a
store without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError

from sam4em.errors import InputDataError
from sam4em.io.atomic import create_directory_once
from sam4em.io.pyramid import block_pyramid, create_levels, level_shape
from sam4em.io.zarr_store import LEVEL0, create_array, open_group, write_image_metadata


def store_identity(volume_shape: Sequence[int], chunks: Sequence[int], classes: list[str]) -> dict:
    """What a prediction store must match to take a block's output."""
    return {"shape": list(volume_shape), "chunks": list(chunks), "classes": list(classes)}


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a yes/no prediction made with probability ``p``."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


UNCERTAINTY = "uncertainty"  # the group of the per-class uncertainty images


# uint8 probability -> uint8 uncertainty, for every one of the 256 values
_UNCERTAINTY_TABLE = np.rint(binary_entropy(np.arange(256) / 255.0) * 255).astype(np.uint8)


def uncertainty_of(probs: np.ndarray) -> np.ndarray:
    """uint8 uncertainty of uint8 probabilities (0..255 = p x 255): the binary entropy in
    bits of p, x 255. 0 where the model is sure either way, 255 at p = 0.5. With TTA or
    both-ways passes p is their mean, so views that disagree raise it too."""
    return _UNCERTAINTY_TABLE[np.asarray(probs, np.uint8)]


def image_groups(root: zarr.Group, classes: Sequence[str]) -> list[tuple[str, zarr.Group]]:
    """(name, group) of every image of a prediction store: each class's probabilities,
    then each class's uncertainty (named ``{class} uncertainty``)."""
    return [(c, root[c]) for c in classes] + [
        (f"{c} uncertainty", root[f"{UNCERTAINTY}/{c}"]) for c in classes
    ]


def ensure_pred_store(
    path: str | os.PathLike[str],
    identity: dict[str, Any],
    voxel_size: Sequence[float],
    block_shape: Sequence[int] | None = None,
) -> zarr.Group:
    """Open ``path``, creating the empty store first if needed (race-safe between jobs),
    with the viewer levels that block jobs of ``block_shape`` write
    (:func:`sam4em.io.pyramid.block_pyramid`).

    An existing store made for another volume shape, chunking or class list is an error.
    """

    if UNCERTAINTY in identity["classes"]:
        raise InputDataError(f"class name '{UNCERTAINTY}' is reserved in {path}; rename it")

    def build(tmp: Path) -> None:
        root = open_group(tmp, mode="w")
        root.attrs["sam4em"] = identity
        root.attrs["voxel_size_nm"] = [float(v) for v in voxel_size]
        shape, chunks = identity["shape"], identity["chunks"]
        for cls in identity["classes"]:
            root.create_group(f"{UNCERTAINTY}/{cls}")
            root.create_group(cls)
        for name, group in image_groups(root, identity["classes"]):
            create_array(group, LEVEL0, shape, chunks, "uint8")
            create_levels(group, *block_pyramid(shape, chunks, block_shape or chunks))
            write_image_metadata(group, name, [LEVEL0], voxel_size)

    create_directory_once(path, build)
    root = open_group(path, mode="r+")
    found = dict(root.attrs.get("sam4em", {}))
    if found != identity:
        raise InputDataError(
            f"{path}: prediction store was made for {found}, this plan needs {identity}; "
            "delete it (and the block markers) to predict again"
        )
    if block_shape is not None:  # a store begun by blocks of another shape lacks levels
        paths, factors = block_pyramid(identity["shape"], identity["chunks"], block_shape)
        for _, group in image_groups(root, identity["classes"]):
            for path, f in zip(paths[1:], factors[1:], strict=True):
                if path not in group:
                    with contextlib.suppress(ContainsArrayError):  # a parallel job made it
                        shape = level_shape(identity["shape"], f)
                        create_array(group, path, shape, identity["chunks"], "uint8")
    return root


COMPLETE = "complete"  # root attribute: {"model", "volume", "blocks"} written by stitch


def mark_incomplete(store: zarr.Group) -> None:
    """Clear the ``complete`` mark before a block writes into ``store``."""
    if COMPLETE in store.attrs:
        del store.attrs[COMPLETE]


def mark_complete(store: zarr.Group, record: dict[str, Any]) -> None:
    """Mark ``store`` complete (``record``: what it was made from)."""
    store.attrs[COMPLETE] = record


def require_complete(path: str | os.PathLike[str]) -> None:
    """An InputDataError unless the prediction store at ``path`` is marked complete."""
    if COMPLETE not in open_group(path).attrs:
        raise InputDataError(
            f"{path}: prediction is incomplete (blocks missing or rewritten since it was "
            "stitched); run the remaining predict-block jobs and stitch first"
        )
