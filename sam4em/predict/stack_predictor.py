"""Predict a stack of slices with overlapping tiles, blending and the 3D memory.

All tiles of a slice go through the model together (in chunks of ``max_batch``); each
chunk of tile positions keeps its own memory bank, so a tile's memory holds the same XY
window on the previous slices. Outputs are per-class probabilities in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sam4em.model.sam4em_model import SAM4EM
from sam4em.predict.blending import blend_window, slice_tiles


@dataclass(frozen=True)
class PredictSettings:
    """How slices are cut into model tiles and run."""

    tile_overlap: int = 64
    window: str = "bump"
    max_batch: int = 16
    memory: bool = True  # False: every slice alone (2D)
    both_ways: bool = False  # average a pass down the stack with a pass up


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

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )

    @torch.inference_mode()
    def run_pass(
        self, stack: np.ndarray, order: Iterable[int], origins: list[tuple[int, int]]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(k, probabilities (C, Y, X))`` for slices ``k`` of ``stack`` in ``order``,
        each conditioned on the memory of the slices before it in that order."""
        _, height, width = stack.shape
        s = self.size
        chunks = [
            origins[i : i + self.settings.max_batch]
            for i in range(0, len(origins), self.settings.max_batch)
        ]
        # slices are padded up to one tile; every tile must lie inside the padded slice
        if max(y for y, _ in origins) + s > max(height, s) or max(x for _, x in origins) + s > max(
            width, s
        ):
            raise ValueError(f"tiles at {origins} leave the stack {stack.shape}")
        banks = [self.model.new_memory() for _ in chunks]
        for k in order:
            image = torch.from_numpy(_pad(stack[k], s)).to(self.device)
            acc = torch.zeros((self.n_classes, *image.shape), device=self.device)
            norm = torch.zeros(image.shape, device=self.device)
            for chunk, bank in zip(chunks, banks, strict=True):
                tiles = torch.stack([image[y : y + s, x : x + s] for y, x in chunk])
                tiles = tiles[:, None].float()
                with self._autocast():
                    if self.settings.memory:
                        logits = self.model.step(tiles, bank).final
                    else:
                        logits = self.model(tiles).final
                probs = torch.sigmoid(logits.float())
                for (y, x), p in zip(chunk, probs, strict=True):
                    acc[:, y : y + s, x : x + s] += p * self.weight
                    norm[y : y + s, x : x + s] += self.weight
            probs = acc / norm.clamp_min(1e-12)
            yield k, probs[:, :height, :width].cpu().numpy()

    def predict(
        self,
        stack: np.ndarray,
        origins: list[tuple[int, int]] | None = None,
        on_slice: Callable[[], None] | None = None,
    ) -> np.ndarray:
        """(C, Z, Y, X) float32 probabilities for a (Z, Y, X) stack, memory in z order.

        ``origins``: (y, x) corners of the model tiles in the stack (default: overlapping
        tiles covering it); pixels no tile covers stay 0. With ``both_ways`` the stack is
        also run from the last slice to the first and the two passes are averaged.
        ``on_slice`` is called after every slice (progress).
        """
        if stack.ndim != 3:
            raise ValueError(f"expected a (z, y, x) stack, got shape {stack.shape}")
        z, height, width = stack.shape
        s = self.size
        if origins is None:
            origins = slice_tiles(max(height, s), max(width, s), s, self.settings.tile_overlap)
        out = np.zeros((self.n_classes, z, height, width), dtype=np.float32)
        orders = [range(z)] + ([range(z - 1, -1, -1)] if self.settings.both_ways else [])
        for order in orders:
            for k, probs in self.run_pass(stack, order, origins):
                out[:, k] += probs / len(orders)
                if on_slice is not None:
                    on_slice()
        return out
