"""The components stage's settings, read once from the project config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sam4em.config import class_setting, threshold_level


@dataclass(frozen=True)
class ComponentSettings:
    """How one class's probabilities become 3D instances."""

    connectivity: int  # 6, 18 or 26
    block_shape: tuple[int, int, int]  # labelled a block at a time (default: inference's)
    threshold: float | None  # configured probability threshold; None: the val-chosen one
    min_voxels: int = 0
    min_z: int = 0

    @classmethod
    def from_config(cls, config: dict[str, Any], class_name: str) -> ComponentSettings:
        """The components settings of ``class_name`` in a validated project config."""
        c = config["components"]
        threshold = class_setting(c["threshold"], class_name, None)
        return cls(
            connectivity=int(c["connectivity"]),
            block_shape=tuple(c["block_shape"] or config["inference"]["block_shape"]),  # type: ignore[arg-type]
            threshold=None if threshold is None else float(threshold),
            min_voxels=int(class_setting(c["min_voxels"], class_name, 0)),
            min_z=int(class_setting(c["min_z"], class_name, 0)),
        )

    def level(self, class_name: str, chosen: Mapping[str, float] | None) -> int:
        """The uint8 cut for ``class_name`` (see :func:`sam4em.config.threshold_level`)."""
        return threshold_level(self.threshold, class_name, chosen)
