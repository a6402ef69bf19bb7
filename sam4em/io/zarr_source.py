"""zarr v2 and v3 arrays (``store.zarr`` or ``store.zarr/path/to/array``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource, as_zyx


class ZarrSource(VolumeSource):
    """An array in a local zarr store, either format version."""

    def __init__(self, store: str | Path, key: str) -> None:
        self.name = f"{store}/{key}" if key else str(store)
        if not Path(store).is_dir():
            raise InputDataError(f"{store}: no such zarr store")
        try:
            node = zarr.open(store=str(store), path=key or None, mode="r")
        except Exception as exc:
            raise InputDataError(f"{self.name}: cannot open zarr array ({exc})") from None
        if not isinstance(node, zarr.Array):
            members = sorted(k for k, _ in node.arrays()) if isinstance(node, zarr.Group) else []
            hint = f"; arrays here: {', '.join(members)}" if members else ""
            raise InputDataError(f"{self.name}: is a zarr group, not an array{hint}")
        self._array = node
        self._shape = as_zyx(node.shape, self.name)
        self._dtype = np.dtype(node.dtype)

    def _read(self, z0: int, z1: int) -> np.ndarray:
        if self._array.ndim == 2:
            return np.asarray(self._array[...])[None]
        return np.asarray(self._array[z0:z1])
