"""Morphological clean-up of a class mask before it is labelled.

An in-plane opening removes specks and threads narrower than its disk, then an in-plane
closing fills holes and gaps narrower than its disk. Both act slice by slice (sections
are much thicker than pixels in EM), with an elliptical disk of a radius in nanometres
converted to pixels by the voxel size. Outside the volume counts as continuing the mask,
so objects cut by the volume's edge are not eaten from that side.

Each step changes a voxel only from what lies within twice its radius, so a block grown
by :attr:`Cleanup.halo` in y and x and cropped back gives exactly the whole-volume
result: block-wise labelling stays identical to labelling the whole volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sam4em.blocks.plan import Box


def _disk(radius: tuple[int, int]) -> np.ndarray:
    """A (1, 2ry+1, 2rx+1) elliptical structuring element."""
    ry, rx = radius
    y, x = np.ogrid[-ry : ry + 1, -rx : rx + 1]
    return ((y / max(ry, 1)) ** 2 + (x / max(rx, 1)) ** 2 <= 1)[None]


@dataclass(frozen=True)
class Cleanup:
    """In-plane opening then closing radii (y, x) in pixels; (0, 0) skips a step."""

    open_px: tuple[int, int] = (0, 0)
    close_px: tuple[int, int] = (0, 0)

    @classmethod
    def from_nm(cls, *, open_nm: float, close_nm: float, voxel_nm: Sequence[float]) -> Cleanup:
        """Radii in nanometres turned into pixels with the (z, y, x) ``voxel_nm``."""

        def px(r: float) -> tuple[int, int]:
            return (round(r / float(voxel_nm[1])), round(r / float(voxel_nm[2])))

        return cls(open_px=px(open_nm), close_px=px(close_nm))

    @property
    def halo(self) -> tuple[int, int, int]:
        """How far (z, y, x) beyond a block the clean-up must read to be exact there."""
        return (0, *(2 * (o + c) for o, c in zip(self.open_px, self.close_px, strict=True)))  # type: ignore[return-value]

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned (z, y, x) boolean mask."""
        mask = np.asarray(mask, dtype=bool)
        if max(self.open_px) > 0:
            disk = _disk(self.open_px)
            mask = ndimage.binary_dilation(ndimage.binary_erosion(mask, disk, border_value=1), disk)
        if max(self.close_px) > 0:
            disk = _disk(self.close_px)
            mask = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
        return mask


def cleaned_reader(
    read_mask: Callable[[Box], np.ndarray], shape: Sequence[int], cleanup: Cleanup
) -> Callable[[Box], np.ndarray]:
    """``read_mask`` (a box of the raw class mask of a volume of ``shape``) made to return
    each box cleaned exactly as cleaning the whole volume would: it reads the box grown
    by the clean-up's halo and crops the result back."""

    def read(box: Box) -> np.ndarray:
        outer = box.grown(cleanup.halo, shape)
        return cleanup(read_mask(outer))[box.within(outer)]

    return read
