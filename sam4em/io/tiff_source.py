"""Multi-page TIFF stacks (one page per z slice) through tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource, as_zyx


class TiffSource(VolumeSource):
    """A TIFF file whose pages (or whose single 3D series) form the z axis."""

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            self._shape = as_zyx(tuple(series.shape), self.name)
            self._dtype = np.dtype(series.dtype)
            self._series = series
        except InputDataError:
            raise
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise InputDataError(f"{self.name}: cannot read TIFF ({exc})") from None

    def _read(self, z0: int, z1: int) -> np.ndarray:
        if self._shape[0] == 1 or len(self._series.pages) == self._shape[0]:
            pages = [self._series.pages[z].asarray() for z in range(z0, z1)]
            return np.stack(pages).reshape(z1 - z0, *self._shape[1:])
        data = self._series.asarray().reshape(self._shape)
        return np.ascontiguousarray(data[z0:z1])

    def close(self) -> None:
        self._tif.close()
