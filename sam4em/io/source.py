"""The common interface of every volume reader, and the spec-string dispatch.

A *source spec* is a string that names a volume:

- ``stack.tif`` / ``stack.tiff``: a multi-page TIFF, one page per z slice;
- ``slices/``: a folder of TIFF or PNG slices, in natural sort order;
- ``file.h5:/group/dataset`` (also ``.hdf5``, ``.hdf``): an HDF5 dataset;
- ``store.zarr`` or ``store.zarr/path/to/array``: a zarr v2 or v3 array;
- ``volume.mrc`` (also ``.rec``, ``.st``, ``.map``): an MRC file.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from sam4em.errors import InputDataError


class VolumeSource(ABC):
    """A 3D volume (z, y, x) that can be read slab by slab without loading it whole."""

    #: human-readable name of the source, used in error messages
    name: str
    #: set by each reader when it opens its source
    _shape: tuple[int, int, int]
    _dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the volume as (z, y, x)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """Element type of the stored values."""
        return self._dtype

    def read(self, z0: int, z1: int) -> np.ndarray:
        """Return slices ``z0 <= z < z1`` as an array of shape (z1 - z0, y, x); an
        InputDataError naming the source and slices when the stored data cannot be read
        (a corrupt chunk, a truncated file, a failing disk)."""
        try:
            return self._read(z0, z1)
        except InputDataError:
            raise
        except Exception as exc:
            raise InputDataError(
                f"{self.name}: cannot read slices {z0}-{z1 - 1} "
                f"(damaged or truncated data: {type(exc).__name__}: {exc})"
            ) from None

    @abstractmethod
    def _read(self, z0: int, z1: int) -> np.ndarray:
        """The reader's own :meth:`read`, without the error wrapping."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open file handles."""

    def __enter__(self) -> VolumeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_zyx(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """Interpret a 2D or 3D shape as (z, y, x); anything else is an input error."""
    if len(shape) == 2:
        return (1, int(shape[0]), int(shape[1]))
    if len(shape) == 3:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    raise InputDataError(f"{name}: expected a 2D or 3D volume, found shape {tuple(shape)}")


_HDF5 = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf)):(?P<key>.*)$", re.IGNORECASE)
_ZARR = re.compile(r"^(?P<store>.+?\.zarr)(?:/(?P<key>.*))?$", re.IGNORECASE)
_MRC_SUFFIXES = {".mrc", ".rec", ".st", ".map"}
_TIFF_SUFFIXES = {".tif", ".tiff"}


def source_path(spec: str | os.PathLike[str]) -> Path:
    """The file or folder on disk that a volume ``spec`` reads (the HDF5 file, the zarr
    store, the TIFF/MRC file or the slice folder)."""
    text = os.fspath(spec).rstrip("/") or os.fspath(spec)
    if m := _HDF5.match(text):
        return Path(m["file"])
    if m := _ZARR.match(text):
        return Path(m["store"])
    return Path(text)


def absolute_spec(spec: str | os.PathLike[str]) -> str:
    """``spec`` with its file or folder made absolute (against the current folder), so a
    record of where data came from still names it when read from elsewhere."""
    text = os.fspath(spec)
    return text if source_path(text).is_absolute() else os.path.join(os.getcwd(), text)


def open_source(spec: str | os.PathLike[str]) -> VolumeSource:
    """Open the volume named by ``spec`` (see the module docstring for the forms)."""
    text = os.fspath(spec).rstrip("/") or os.fspath(spec)
    if m := _HDF5.match(text):
        from sam4em.io.hdf5_source import Hdf5Source

        return Hdf5Source(m["file"], m["key"])
    if m := _ZARR.match(text):
        from sam4em.io.zarr_source import ZarrSource

        return ZarrSource(m["store"], m["key"] or "")
    path = Path(text)
    if path.is_dir():
        from sam4em.io.slice_folder import SliceFolderSource

        return SliceFolderSource(path)
    if not path.exists():
        raise InputDataError(f"{text}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".hdf"):
        raise InputDataError(
            f"{text}: the dataset path inside the HDF5 file is missing (write {text}:/group/name)"
        )
    if suffix in _TIFF_SUFFIXES:
        from sam4em.io.tiff_source import TiffSource

        return TiffSource(path)
    if suffix in _MRC_SUFFIXES:
        from sam4em.io.mrc_source import MrcSource

        return MrcSource(path)
    raise InputDataError(
        f"{text}: unsupported volume format '{suffix}' (use a TIFF stack, a folder of "
        "TIFF/PNG slices, file.h5:/dataset, store.zarr/array or an MRC file)"
    )
