"""MRC files (``.mrc``, ``.rec``, ``.st``, ``.map``) through mrcfile, memory-mapped."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource, as_zyx


class MrcSource(VolumeSource):
    """The data block of an MRC file, read through a memory map."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        try:
            self._mrc = mrcfile.mmap(path, mode="r", permissive=False)
            data = self._mrc.data
        except Exception as exc:
            raise InputDataError(f"{self.name}: cannot read MRC ({exc})") from None
        if data is None:
            raise InputDataError(f"{self.name}: MRC file holds no data")
        self._data = data
        self._shape = as_zyx(data.shape, self.name)
        self._dtype = np.dtype(data.dtype).newbyteorder("=")

    def _read(self, z0: int, z1: int) -> np.ndarray:
        data = self._data[None] if self._data.ndim == 2 else self._data[z0:z1]
        return np.asarray(data, dtype=self.dtype)

    def close(self) -> None:
        self._mrc.close()
