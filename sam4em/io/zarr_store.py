"""The project's zarr v3 layout: Blosc/Zstd arrays in ZYX with OME-NGFF metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from sam4em import __version__
from sam4em.errors import InputDataError

OME_VERSION = "0.5"
#: the full-resolution level of a per-class image group (``pred.zarr/{class}/0``, ...)
LEVEL0 = "0"
#: volume.zarr's per-voxel mask of known labels: 1 inside a crop where someone painted
LABELLED = "labelled"


def blosc_zstd() -> BloscCodec:
    """The compressor of every array the project writes (Blosc with Zstd inside)."""
    return BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


def chunk_misfit(block_shape: Sequence[int], chunks: Sequence[int]) -> str | None:
    """Why blocks of ``block_shape`` would not be whole chunks of ``chunks`` (the first
    axis that is not a multiple), or None where they are."""
    for axis, b, c in zip("zyx", block_shape, chunks, strict=True):
        if int(b) % int(c):
            return f"{axis} size {b} is not a multiple of the chunks' {c}"
    return None


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


AXES = [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]


def ngff_datasets(
    paths: Sequence[str], voxel_size: Sequence[float], factors: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """OME-NGFF ``datasets`` of ZYX levels ``paths`` (level i downsampled in y and x by
    ``factors[i]``, default 1, each of its voxels the block of f x f level-0 voxels it
    summarises) in nanometres. A downsampled voxel's centre is the centre of its block,
    (f - 1) / 2 level-0 voxels from the block's first voxel: that is the level's
    translation, so the levels overlay exactly in a viewer."""
    factors = list(factors) or [1] * len(paths)
    vz, vy, vx = (float(v) for v in voxel_size)
    datasets = []
    for path, f in zip(paths, factors, strict=True):
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [vz, vy * f, vx * f]}]
        if f != 1:
            shift = [0.0, vy * (f - 1) / 2, vx * (f - 1) / 2]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": path, "coordinateTransformations": transforms})
    return datasets


def write_image_metadata(
    group: zarr.Group,
    name: str,
    paths: Sequence[str],
    voxel_size: Sequence[float],
    factors: Sequence[int] = (),
    downsampling: str = "mean",
) -> None:
    """Write the OME-NGFF 0.5 image metadata (one ``multiscales`` entry over ``paths``,
    see :func:`ngff_datasets`) into ``group``'s ``ome`` attribute, through ome-zarr's
    writer. ``downsampling`` names how levels were made: "mean" for intensity images
    (which also get an ``omero`` display window of 0-255), "mode" for label images."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    method = {"mean": "2x2 block mean per level", "mode": "2x2 block mode per level"}
    metadata: dict[str, Any] = {"method": method[downsampling], "sam4em_version": __version__}
    if downsampling == "mean":  # an intensity image (uint8): its display window
        window = {"min": 0, "max": 255, "start": 0, "end": 255}
        channel = {"label": name, "color": "FFFFFF", "window": window, "active": True}
        metadata["omero"] = {"channels": [channel], "rdefs": {"model": "greyscale"}}
    write_multiscales_metadata(
        group,
        ngff_datasets(paths, voxel_size, factors),
        fmt=FormatV05(),
        axes=AXES,
        name=name,
        metadata=metadata,
    )
    # ome-zarr's writer has no argument for the optional "type" (the downsampling kind)
    ome = dict(group.attrs["ome"])
    ome["multiscales"] = [{**ome["multiscales"][0], "type": downsampling}]
    group.attrs["ome"] = ome


def write_label_metadata(
    labels: zarr.Group,
    name: str,
    rgb: Sequence[float] | None = None,
    source: str = "../../",
) -> None:
    """List the label image ``labels[name]`` in the ``labels`` group's OME metadata (once)
    and mark it as an ``image-label`` of the image at ``source`` (relative to the label
    image), its foreground value 1 drawn in ``rgb`` (0-1 floats) when given; without
    ``rgb`` (instance ids) viewers pick their own colours."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_label_metadata as write_image_label

    colours = None
    if rgb is not None:
        colours = [{"label-value": 1, "rgba": [round(255 * c) for c in rgb] + [255]}]
    listed = list(dict(labels.attrs.get("ome", {})).get("labels", []))
    write_image_label(labels, name, colors=colours, fmt=FormatV05(), source={"image": source})
    # the writer appends the name even when listed, and leaves out the labels group's own
    # "version" that OME-NGFF 0.5 requires (ome-zarr-models refuses the group without it)
    ome = dict(labels.attrs["ome"])
    ome["labels"] = listed if name in listed else [*listed, name]
    ome["version"] = OME_VERSION
    labels.attrs["ome"] = ome


def open_group(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open a zarr group of the project's layout (v3)."""
    return zarr.open_group(store=str(path), mode=mode, zarr_format=3 if mode == "w" else None)


@dataclass(frozen=True)
class StoreKind:
    """One kind of the project's zarr stores, recognised by a key of its root's ``sam4em``
    attributes. Used to open inputs (a clear error for anything else) and to let an
    output replace only an earlier store of its own kind (:mod:`sam4em.io.atomic`)."""

    name: str  # what users call it, e.g. "volume store"
    writer: str  # the verb that writes it, e.g. "sam4em import"
    key: str  # a key only this kind has in its ``sam4em`` attributes

    def is_earlier(self, path: Path) -> bool:
        """Whether ``path`` is a store of this kind."""
        try:
            meta = json.loads((Path(path) / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        own = attrs.get("sam4em") if isinstance(attrs, dict) else None
        return isinstance(own, dict) and self.key in own

    def check(self, path: str | os.PathLike[str]) -> Path:
        """``path``, or an InputDataError saying it is missing or not of this kind."""
        what = f"a sam4em {self.name} (written by '{self.writer}')"
        if not Path(path).exists():
            raise InputDataError(f"{path}: not found; expected {what}")
        if not self.is_earlier(Path(path)):
            raise InputDataError(f"{path}: not {what}")
        return Path(path)

    def open(self, path: str | os.PathLike[str], mode: str = "r") -> zarr.Group:
        """Open a store of this kind (see :meth:`check`)."""
        return open_group(self.check(path), mode=mode)


VOLUME = StoreKind("volume store", "sam4em import", "raw_source")
TILES = StoreKind("tile store", "sam4em tile", "tiles_per_slice")
PREDICTION = StoreKind("prediction store", "sam4em predict-block", "chunks")
INSTANCES = StoreKind("instance store", "sam4em components", "source")


def class_array(root: zarr.Group, path: str | os.PathLike[str], cls: str) -> zarr.Array:
    """The level-0 array of class ``cls`` in a per-class store (prediction or instances)
    opened from ``path``; an InputDataError naming the classes it holds."""
    if cls not in root or LEVEL0 not in root[cls]:
        held = sorted(k for k in root.group_keys() if LEVEL0 in root[k])
        raise InputDataError(f"{path}: has no class '{cls}' (it holds {', '.join(held) or 'none'})")
    return root[f"{cls}/{LEVEL0}"]


def truth_array(volume: zarr.Group, cls: str) -> zarr.Array:
    """The level-0 annotation mask of class ``cls`` in an opened volume store."""
    return volume[f"labels/{cls}/{LEVEL0}"]
