"""The components stage's settings, read once from the project config.

Default smallest object volumes, per class (``components.min_volume_nm3: null``), set
from typical sizes so that thresholding specks go and real objects stay:

- ``mito``: 2e5 nm^3 (0.0002 um^3). Mitochondria are at least about 100 nm across and
  run over several 40-50 nm sections; the smallest labelled one in the VNC demo's train
  slices is 2.2e5 nm^3.
- ``synapse``: 1e5 nm^3. Synaptic densities are 100-500 nm across and span 1-3 sections;
  the smallest labelled one in the VNC train slices is 1.7e5 nm^3.
- ``glia``: 0. Glia is a tissue compartment, not countable objects: a small crop cuts its
  processes into pieces of any size, so none is removed.
- any other class: 5e4 nm^3, about a 37 nm cube, below any organelle; it removes the
  few-voxel specks a threshold leaves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sam4em.blocks.plan import COMPONENTS_BLOCK, default_block_shape
from sam4em.config import class_setting, threshold_level
from sam4em.postprocess.cleanup import Cleanup

MIN_VOLUME_NM3 = {"mito": 2e5, "synapse": 1e5, "glia": 0.0}
OTHER_MIN_VOLUME_NM3 = 5e4


def _shape(value: Sequence[int] | None) -> tuple[int, int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]), int(value[2]))


@dataclass(frozen=True)
class ComponentSettings:
    """How one class's probabilities become 3D instances."""

    connectivity: int  # 6, 18 or 26
    block_shape: tuple[int, int, int] | None  # labelled a block at a time; None: block_for
    threshold: float | None  # configured probability threshold; None: the val-chosen one
    min_voxels: int = 0
    min_volume_nm3: float = 0.0
    min_z: int = 0
    open_nm: float = 0.0  # in-plane opening radius of the clean-up (removes specks)
    close_nm: float = 0.0  # in-plane closing radius of the clean-up (fills holes)

    @classmethod
    def from_config(cls, config: dict[str, Any], class_name: str) -> ComponentSettings:
        """The components settings of ``class_name`` in a validated project config."""
        c = config["components"]
        threshold = class_setting(c["threshold"], class_name, None)
        typical = MIN_VOLUME_NM3.get(class_name, OTHER_MIN_VOLUME_NM3)
        return cls(
            connectivity=int(c["connectivity"]),
            block_shape=_shape(c["block_shape"] or config["inference"]["block_shape"]),
            threshold=None if threshold is None else float(threshold),
            min_voxels=int(class_setting(c["min_voxels"], class_name, 0)),
            min_volume_nm3=float(class_setting(c["min_volume_nm3"], class_name, typical)),
            min_z=int(class_setting(c["min_z"], class_name, 0)),
            open_nm=float(class_setting(c["open_nm"], class_name, 0.0)),
            close_nm=float(class_setting(c["close_nm"], class_name, 0.0)),
        )

    def block_for(self, shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, int, int]:
        """The block shape on a volume of ``shape`` stored in ``chunks``: the configured
        one, else up to :data:`~sam4em.blocks.plan.COMPONENTS_BLOCK` in whole chunks."""
        return self.block_shape or default_block_shape(shape, chunks, COMPONENTS_BLOCK)

    def level(self, class_name: str, chosen: Mapping[str, float] | None) -> int:
        """The uint8 cut for ``class_name`` (see :func:`sam4em.config.threshold_level`)."""
        return threshold_level(self.threshold, class_name, chosen)

    def min_voxels_for(self, voxel_nm: Sequence[float]) -> int:
        """Fewest voxels an object keeps: ``min_voxels`` or ``min_volume_nm3``, the larger."""
        by_volume = math.ceil(self.min_volume_nm3 / math.prod(float(v) for v in voxel_nm))
        return max(self.min_voxels, by_volume)

    def cleanup(self, voxel_nm: Sequence[float]) -> Cleanup:
        """The clean-up in pixels of a volume with ``voxel_nm`` (z, y, x) voxels."""
        return Cleanup.from_nm(open_nm=self.open_nm, close_nm=self.close_nm, voxel_nm=voxel_nm)
