"""Per-class binary masks from the configured label sources."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam4em.io.source import VolumeSource, open_source


@dataclass
class ClassMaskSource:
    """How one class's mask is obtained: values of a shared label image, or a mask."""

    cls: str
    key: str  # config key that names the source, for error messages
    source: VolumeSource
    values: tuple[int, ...] | None  # None: any non-zero voxel of a per-class mask
    ignore: int | None = None  # the value that marks voxels nobody painted

    def mask(self, data: np.ndarray) -> np.ndarray:
        """Binary uint8 mask (0/1) of this class in ``data`` read from ``source``."""
        if self.values is None:
            found = data != 0
            if self.ignore is not None:
                found &= data != self.ignore
            return found.astype(np.uint8)
        return np.isin(data, self.values).astype(np.uint8)

    def known(self, data: np.ndarray) -> np.ndarray | None:
        """Where ``data`` is painted (not the ignore value); None: everywhere."""
        return None if self.ignore is None else data != self.ignore


def open_label_sources(
    labels_cfg: dict[str, Any] | None, classes: list[str], dataset_key: str
) -> Iterator[ClassMaskSource]:
    """Yield one :class:`ClassMaskSource` per labelled class, in ``classes`` order.

    One label image shared by several classes is opened once.
    """
    if not labels_cfg:
        return
    ignore = labels_cfg.get("ignore")
    if "source" in labels_cfg:
        key = f"{dataset_key}.labels.source"
        shared = open_source(labels_cfg["source"])
        for cls in classes:
            if cls in labels_cfg["values"]:
                value = labels_cfg["values"][cls]
                values = tuple(value) if isinstance(value, list) else (int(value),)
                yield ClassMaskSource(cls, key, shared, values, ignore)
        return
    for cls in classes:
        if cls in labels_cfg["masks"]:
            key = f"{dataset_key}.labels.masks.{cls}"
            source = open_source(labels_cfg["masks"][cls])
            yield ClassMaskSource(cls, key, source, None, ignore)
