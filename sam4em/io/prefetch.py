"""Slices of a box of an array, read by a background thread ahead of their use.

A block job's model works one z slice at a time; :class:`PrefetchedStack` reads the
block's slices (one z chunk of the array at a time) on a thread while the model works
on the slices already there, so reading and computing overlap instead of following one
another. Decompression and the model both release the GIL.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import numpy as np


class PrefetchedStack:
    """``array[z0:z1, y0:y1, x0:x1]`` as a sequence of z slices; ``stack[k]`` waits until
    slice ``z0 + k`` is read. Reading starts at construction and runs in z order; an
    error while reading is raised by the ``stack[k]`` that waits for it. Use as a
    context manager (or call :meth:`close`) to stop reading early."""

    def __init__(
        self, *, array: Any, z: tuple[int, int], y: tuple[int, int], x: tuple[int, int]
    ) -> None:
        self._array, self._z, self._yx = array, z, (slice(*y), slice(*x))
        self._data = np.empty((z[1] - z[0], y[1] - y[0], x[1] - x[0]), array.dtype)
        self._read = 0  # slices read so far
        self._error: BaseException | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="slice-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        z0, z1 = self._z
        step = max(1, int(self._array.chunks[0]))
        try:
            # slabs end on chunk boundaries, so each chunk is decoded once
            start = z0
            while start < z1:
                stop = min(z1, (start // step + 1) * step)
                self._data[start - z0 : stop - z0] = self._array[(slice(start, stop), *self._yx)]
                with self._cond:
                    self._read = stop - z0
                    self._cond.notify_all()
                    if self._stop:
                        return
                start = stop
        except BaseException as error:  # handed to the reader of the stack
            with self._cond:
                self._error = error
                self._cond.notify_all()

    def __len__(self) -> int:
        return self._data.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if not 0 <= k < len(self):
            raise IndexError(f"slice {k} of a stack of {len(self)}")
        with self._cond:
            self._cond.wait_for(lambda: self._read > k or self._error is not None)
            if self._read <= k:
                raise RuntimeError(f"reading slices {self._z} failed") from self._error
        return self._data[k]

    def close(self) -> None:
        """Stop reading (after the slab being read) and wait for the thread."""
        with self._cond:
            self._stop = True
        self._thread.join()

    def __enter__(self) -> PrefetchedStack:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
