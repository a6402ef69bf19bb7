"""The project's zarr v3 layout: Blosc/Zstd arrays in ZYX with OME-NGFF metadata."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

OME_VERSION = "0.5"
#: the full-resolution level of a per-class image group (``pred.zarr/{class}/0``, ...)
LEVEL0 = "0"


def blosc_zstd() -> BloscCodec:
    """The compressor of every array the project writes (Blosc with Zstd inside)."""
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


def clamp_chunks(chunks: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """Chunk shape no larger than the array along any axis (and at least 1)."""
    return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True))


def create_array(
    group: zarr.Group,
    name: str,
    shape: Sequence[int],
    chunks: Sequence[int],
    dtype: str | np.dtype,
    dimension_names: Sequence[str] | None = ("z", "y", "x"),
    attributes: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create a zero-filled, Blosc/Zstd-compressed array ``name`` in ``group``."""
    return group.create_array(
        name,
        shape=tuple(int(s) for s in shape),
        chunks=clamp_chunks(chunks, shape),
        dtype=dtype,
        compressors=blosc_zstd(),
        fill_value=0,
        dimension_names=list(dimension_names) if dimension_names else None,
        attributes=attributes or {},
    )


def ngff_multiscales(
    name: str, paths: Sequence[str], voxel_size: Sequence[float], factors: Sequence[int] = ()
) -> dict[str, Any]:
    """OME-NGFF 0.5 ``multiscales`` entry for ZYX levels ``paths`` (level i downsampled
    in y and x by ``factors[i]``, default 1), with physical units in nanometres."""
    factors = list(factors) or [1] * len(paths)
    datasets = []
    for path, f in zip(paths, factors, strict=True):
        scale = [float(voxel_size[0]), float(voxel_size[1]) * f, float(voxel_size[2]) * f]
        datasets.append(
            {"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return {
        "name": name,
        "axes": [
            {"name": "z", "type": "space", "unit": "nanometer"},
            {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"},
        ],
        "datasets": datasets,
    }


def ome_attrs(
    name: str, paths: Sequence[str], voxel_size: Sequence[float], factors: Sequence[int] = ()
) -> dict[str, Any]:
    """The ``ome`` group attribute: OME-NGFF version and one multiscales entry."""
    return {
        "version": OME_VERSION,
        "multiscales": [ngff_multiscales(name, paths, voxel_size, factors)],
    }


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a zarr group of the project's layout (v3)."""
    return zarr.open_group(store=str(path), mode=mode, zarr_format=3 if mode == "w" else None)
