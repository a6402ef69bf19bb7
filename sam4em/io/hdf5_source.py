"""HDF5 datasets (``file.h5:/path/to/dataset``) through h5py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource, as_zyx


class Hdf5Source(VolumeSource):
    """One dataset inside an HDF5 file."""

    def __init__(self, path: str | Path, key: str) -> None:
        self.name = f"{path}:{key}"
        if not Path(path).is_file():
            raise InputDataError(f"{path}: no such HDF5 file")
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise InputDataError(f"{path}: cannot open as HDF5 ({exc})") from None
        key = key.strip("/")
        obj = self._file.get(key) if key else None
        if not isinstance(obj, h5py.Dataset):
            found = sorted(name for name, o in _walk(self._file) if isinstance(o, h5py.Dataset))
            self._file.close()
            hint = f"; datasets in the file: {', '.join(found[:10])}" if found else ""
            raise InputDataError(f"{self.name}: no such dataset in the HDF5 file{hint}")
        self._ds = obj
        self._shape = as_zyx(obj.shape, self.name)
        self._dtype = np.dtype(obj.dtype)

    def _read(self, z0: int, z1: int) -> np.ndarray:
        if self._ds.ndim == 2:
            return self._ds[()][None]
        return self._ds[z0:z1]

    def close(self) -> None:
        self._file.close()


def _walk(group: h5py.Group) -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    group.visititems(lambda name, obj: items.append((name, obj)))
    return items
