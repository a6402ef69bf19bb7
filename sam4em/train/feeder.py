"""Training batches drawn, read and augmented on a thread while the model trains.

:class:`BatchFeeder` hands out the batches of a run in order. With ``ahead`` it starts
preparing the next batch as soon as one is taken, so drawing, reading and augmenting
overlap the optimisation step (numpy, SciPy and zarr release the GIL for most of it).
The batches are exactly those of drawing them one after another: the sampler and the
augmentation generator are only ever advanced by the thread preparing the next batch,
and :meth:`BatchFeeder.state` gives their states from *before* the batch still pending,
so a run resumed from a checkpoint gets the same batches as one never stopped.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from sam4em.train.augment import augment
from sam4em.train.sampler import BalancedSampler
from sam4em.train.settings import StageSettings
from sam4em.train.tile_data import TileSet

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def make_batch(
    data: TileSet, indices: np.ndarray, s: StageSettings, rng: np.random.Generator | None
) -> Batch:
    """Examples ``indices`` as tensors (B, T, 1, S, S), (B, T, C, S, S), (B, C); augmented
    when ``rng`` is given."""
    images, labels, labelled = [], [], []
    for i in indices:
        im, lab, known = data[int(i)]
        if rng is not None:
            im, lab = augment(im, lab, s.augment, rng)
        images.append(im.astype(np.float32))
        labels.append(lab)
        labelled.append(known)
    # (B, T, 1, S, S), (B, T, C, S, S), (B, C)
    return (
        torch.from_numpy(np.stack(images))[:, :, None],
        torch.from_numpy(np.stack(labels).astype(np.float32)),
        torch.from_numpy(np.stack(labelled)),
    )


class BatchFeeder:
    """The augmented training batches of one stage, in order (see the module docstring).
    Call :meth:`close` (or use it as a context manager) to stop the thread."""

    def __init__(self, *, data: TileSet, s: StageSettings, ahead: bool = True) -> None:
        self.data, self.s = data, s
        self.sampler = BalancedSampler(data.presence, data.classes, s.balance, s.seed)
        self.aug_rng = np.random.default_rng(s.seed + 1000)
        self.pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches") if ahead else None
        )
        self.pending: Future[Batch] | None = None
        self.pending_state: dict[str, Any] | None = None

    def _draw(self) -> Batch:
        indices = self.sampler.draw(self.s.batch_size)
        return make_batch(self.data, indices, self.s, self.aug_rng)

    def _rng_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state(), "aug_rng": self.aug_rng.bit_generator.state}

    def next(self) -> Batch:
        """The next batch (waits for it when it is being prepared)."""
        if self.pool is None:
            return self._draw()
        if self.pending is None:
            self.pending_state = self._rng_state()
            self.pending = self.pool.submit(self._draw)
        batch = self.pending.result()
        self.pending_state = self._rng_state()  # the thread is idle: the states are final
        self.pending = self.pool.submit(self._draw)
        return batch

    def state(self) -> dict[str, Any]:
        """The random states that give the batches not yet handed out."""
        return self.pending_state if self.pending is not None else self._rng_state()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (of a run with the same data and settings)."""
        self._drop_pending()
        self.sampler.restore(state["sampler"])
        self.aug_rng.bit_generator.state = state["aug_rng"]

    def _drop_pending(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending, self.pending_state = None, None

    def close(self) -> None:
        """Wait for the batch being prepared and stop the thread."""
        if self.pool is not None:
            try:
                self._drop_pending()
            finally:
                self.pool.shutdown(wait=True)

    def __enter__(self) -> BatchFeeder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
