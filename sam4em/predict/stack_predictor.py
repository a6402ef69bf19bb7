"""Predict a stack of slices with overlapping tiles, blending and the 3D memory.

All tiles of a slice go through the model together (in chunks of ``max_batch``); each
chunk of tile positions keeps its own memory bank, so a tile's memory holds the same XY
window on the previous slices. Outputs are per-class probabilities in [0, 1].

A model trained at ``tiling.scale`` != 1 runs on the volume resampled to its grid, and
its probabilities are resampled back onto the volume's pixels (:class:`PlaneWindow`).
With ``tta`` every tile also goes through the model flipped and rotated (the eight
symmetries of the square, each with its own memory), and the answers are averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sam4em.model.device import autocast, to_device
from sam4em.model.memory_bank import MemoryBank
from sam4em.model.sam4em_model import SAM4EM
from sam4em.predict.blending import blend_window
from sam4em.predict.settings import PredictSettings
from sam4em.tiling.lattice import Lattice
from sam4em.tiling.resample import resample, scaled_plane


@dataclass(frozen=True)
class PlaneWindow:
    """Where a stack lies in its volume's (Y, X) plane, and what to make of it.

    ``model_box`` (y0, y1, x0, x1) is the part of the model grid to run (the volume
    plane resampled by ``scale``), ``origins`` the (y, x) corners of the model tiles run
    there (relative to the model box), ``core_box`` the volume pixels to return.
    """

    plane: tuple[int, int]
    scale: float
    read_origin: tuple[int, int]
    model_box: tuple[int, int, int, int]
    origins: tuple[tuple[int, int], ...]
    core_box: tuple[int, int, int, int]

    @property
    def model_plane(self) -> tuple[int, int]:
        """(Y, X) of the whole plane on the model grid."""
        return scaled_plane(self.plane, self.scale)

    @classmethod
    def whole(cls, plane: tuple[int, int], scale: float, lattice: Lattice) -> PlaneWindow:
        """The whole plane, read from its origin and covered by ``lattice``."""
        ny, nx = scaled_plane(plane, scale)
        origins = lattice.origins(max(ny, lattice.tile), max(nx, lattice.tile))
        return cls(plane, scale, (0, 0), (0, ny, 0, nx), tuple(origins), (0, plane[0], 0, plane[1]))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0..7) of the square on the last two axes: k % 4 quarter turns,
    then a flip when k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`dihedral`."""
    x = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


def _pad(image: np.ndarray, size: int) -> np.ndarray:
    py, px = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if py or px:
        image = np.pad(
            image, ((0, py), (0, px)), mode="reflect" if min(image.shape) > 1 else "edge"
        )
    return image


class StackPredictor:
    """Runs a trained model over (Z, Y, X) uint8 stacks; holds no per-stack state."""

    def __init__(self, model: SAM4EM, settings: PredictSettings, device: torch.device) -> None:
        self.model = model.eval().to(device)
        self.settings = settings
        self.device = device
        self.size = model.config.img_size
        self.weight = torch.from_numpy(blend_window(self.size, settings.window)).to(device)
        self.n_classes = len(model.config.classes)

    def _tile_probs(self, tiles: torch.Tensor, bank: MemoryBank) -> torch.Tensor:
        """Probabilities (B, C, S, S) of tiles (B, 1, S, S), averaged over the symmetries
        with ``tta`` (the bank then holds the memories of all of them)."""
        views = range(8) if self.settings.tta else range(1)
        batch = torch.cat([dihedral(tiles, k) for k in views])
        with autocast(self.device):
            if self.settings.memory:
                logits = self.model.step(batch, bank).final
            else:
                logits = self.model(batch).final
        probs = torch.sigmoid(logits.float())
        if len(views) == 1:
            return probs
        undone = [undo_dihedral(p, k) for k, p in zip(views, probs.chunk(len(views)), strict=True)]
        return torch.stack(undone).mean(0)

    def run_window(
        self,
        stack: Sequence[np.ndarray],
        order: Iterable[int],
        window: PlaneWindow,
        breaks: frozenset[int] = frozenset(),
    ) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`run_pass` on the model grid: each slice ``stack[k]`` (read from
        ``window.read_origin`` of the volume plane; any sequence of 2D slices, fetched
        when its turn comes) is resampled onto ``window.model_box``, the window's tiles
        run there, and each slice's probabilities come back resampled onto
        ``window.core_box`` of the volume plane. ``breaks``: as in :meth:`run_pass`."""
        model_plane, (my0, my1, mx0, mx1) = window.model_plane, window.model_box
        scaled = (
            (k, resample(stack[k], window.plane, model_plane, window.read_origin,
                         window.model_box, grey=True))
            for k in order
        )  # fmt: skip
        tiles = list(window.origins)
        for k, probs in self.run_pass(scaled, (my1 - my0, mx1 - mx0), tiles, breaks):
            yield k, resample(probs, model_plane, window.plane, (my0, mx0), window.core_box)

    @torch.inference_mode()
    def run_pass(
        self,
        slices: Iterable[tuple[int, np.ndarray]],
        plane: tuple[int, int],
        origins: list[tuple[int, int]],
        breaks: frozenset[int] = frozenset(),
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(k, probabilities (C, Y, X))`` for the ``(k, slice)`` pairs of
        ``slices`` (each ``plane`` in size), each conditioned on the memory of the slices
        before it in the pass. ``breaks``: the ``k`` that follow a gap in z (slices
        ``k - 1`` and ``k`` are not neighbours); the memory is cleared across each, in
        either direction, as it is for a pass that skips a slice."""
        height, width = plane
        s = self.size
        chunks = [
            origins[i : i + self.settings.max_batch]
            for i in range(0, len(origins), self.settings.max_batch)
        ]
        # slices are padded up to one tile; every tile must lie inside the padded slice
        if max(y for y, _ in origins) + s > max(height, s) or max(x for _, x in origins) + s > max(
            width, s
        ):
            raise ValueError(f"tiles at {origins} leave the slice plane {plane}")
        banks, previous = [self.model.new_memory() for _ in chunks], None
        for k, plane_image in slices:
            if previous is not None and (abs(k - previous) != 1 or max(k, previous) in breaks):
                banks = [self.model.new_memory() for _ in chunks]
            previous = k
            image = to_device(torch.from_numpy(_pad(plane_image, s)), self.device)
            acc = torch.zeros((self.n_classes, *image.shape), device=self.device)
            norm = torch.zeros(image.shape, device=self.device)
            for chunk, bank in zip(chunks, banks, strict=True):
                tiles = torch.stack([image[y : y + s, x : x + s] for y, x in chunk])
                probs = self._tile_probs(tiles[:, None].float(), bank)
                for (y, x), p in zip(chunk, probs, strict=True):
                    acc[:, y : y + s, x : x + s] += p * self.weight
                    norm[y : y + s, x : x + s] += self.weight
            probs = acc / norm.clamp_min(1e-12)
            yield k, probs[:, :height, :width].cpu().numpy()

    def predict(
        self,
        stack: Sequence[np.ndarray],
        window: PlaneWindow | None = None,
        on_slice: Callable[[], None] | None = None,
        breaks: frozenset[int] = frozenset(),
    ) -> np.ndarray:
        """(C, Z, y, x) float32 probabilities for a (Z, Y, X) stack, memory in z order.

        ``window``: where the stack lies in its volume, which tiles run and which pixels
        to return (default: the stack is the whole volume, covered by tiles overlapping
        by a quarter, at ``settings.scale``); pixels no tile covers stay 0. With
        ``both_ways`` the stack is also run from the last slice to the first and the
        passes averaged. ``on_slice`` is called after every slice (progress). ``breaks``:
        the slices that follow a gap in z (:meth:`run_pass`).
        """
        z = len(stack)
        if not z or np.ndim(stack[0]) != 2:
            raise ValueError(f"expected a (z, y, x) stack, got shape {np.shape(stack)}")
        if window is None:
            lattice = Lattice.from_overlap(self.size)
            window = PlaneWindow.whole(stack[0].shape, self.settings.scale, lattice)
        cy0, cy1, cx0, cx1 = window.core_box
        out = np.zeros((self.n_classes, z, cy1 - cy0, cx1 - cx0), dtype=np.float32)
        orders = [range(z)] + ([range(z - 1, -1, -1)] if self.settings.both_ways else [])
        for order in orders:
            for k, probs in self.run_window(stack, order, window, breaks):
                out[:, k] += probs / len(orders)
                if on_slice is not None:
                    on_slice()
        return out
