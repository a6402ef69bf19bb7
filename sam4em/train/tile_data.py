"""Training examples read from ``tiles/{split}.zarr``: 2D tiles or z-sequences of tiles.

The training code only ever opens train and val tile stores, and a store of the test
split is refused outright, so test slices cannot reach training or model selection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

from sam4em.errors import InputDataError

CACHE_BYTES = 2**30  # tile stores up to this size (all stores of a set) are read once


class TileSet:
    """Examples from one or more tile stores: single tiles (T=1) or z-sequences (T>1).

    An example is ``(images (T, S, S) uint8, labels (T, C, S, S) uint8, labelled (C,) bool)``.
    Single tiles come from the split's own slices; a val store's sequences may begin with
    raw-only context slices (see :mod:`sam4em.tiling.tiles`), so val scores the last slice.
    """

    def __init__(
        self, stores: list[str | os.PathLike[str]], sequences: bool, cache: bool = True
    ) -> None:
        """``cache``: hold the stores' tiles in memory when they fit :data:`CACHE_BYTES`
        (training draws each tile many times; reading it from zarr each time costs more
        than a step's augmentation)."""
        if not stores:
            raise InputDataError("no tile store given")
        self.groups = []
        self.index: list[tuple[int, np.ndarray]] = []  # (store, tile indices of one example)
        presence: list[np.ndarray] = []
        self.slices: list[tuple[str, int]] = []  # (dataset, z) of the splits' own slices
        classes = None
        for si, path in enumerate(stores):
            group = zarr.open_group(str(path), mode="r")
            meta = group.attrs["sam4em"]
            if meta["split"] == "test":
                raise InputDataError(f"{path}: test tiles are never used for training")
            if classes is not None and meta["classes"] != classes:
                raise InputDataError(f"{path}: classes {meta['classes']} differ from {classes}")
            classes = meta["classes"]
            origin = np.asarray(group["origin"])
            tile_presence = np.asarray(group["presence"])
            scored = np.asarray(group["scored"]) > 0 if "scored" in group else None
            if sequences:
                rows = np.asarray(group["sequences"])
            else:  # single tiles: those of the split, never raw-only context
                rows = np.flatnonzero(scored if scored is not None else origin[:, 0] >= 0)
                rows = rows[:, None]
            for row in rows:
                self.index.append((si, row))
                presence.append(tile_presence[row].max(axis=0))
            own = origin[scored] if scored is not None else origin
            self.slices += [(meta["dataset"], int(z)) for z in np.unique(own[:, 0])]
            labelled = np.array([c in meta["labelled_classes"] for c in classes])
            self.groups.append((group, labelled, meta))
        self.classes: list[str] = list(classes or [])
        self.presence = np.stack(presence) if presence else np.zeros((0, len(self.classes)))
        self.splits = sorted({meta["split"] for _, _, meta in self.groups})
        scales = {float(meta.get("scale", 1.0)) for _, _, meta in self.groups}
        if len(scales) > 1:
            raise InputDataError(f"tile stores of different tiling.scale {sorted(scales)}")
        self.scale: float = scales.pop()
        arrays = [(group["images"], group["labels"]) for group, _, _ in self.groups]
        size = sum(a.nbytes + b.nbytes for a, b in arrays)
        self.cached = cache and size <= CACHE_BYTES
        self.arrays = [(np.asarray(a), np.asarray(b)) for a, b in arrays] if self.cached else arrays

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        store, rows = self.index[i]
        tiles, masks = self.arrays[store]
        images = np.stack([np.asarray(tiles[r]) for r in rows])
        labels = np.stack([np.asarray(masks[r]) for r in rows])
        return images, labels, self.groups[store][1]


def tile_store_paths(paths: list[str]) -> list[Path]:
    """Check that each path is a tile store written by ``sam4em tile``."""
    out = []
    for p in paths:
        path = Path(p)
        if not (path / "zarr.json").is_file():
            raise InputDataError(f"{path}: not a tile store written by 'sam4em tile'")
        out.append(path)
    return out
