"""The FIFO bank of the last M slices' memories: explicit state, owned by the caller."""

from __future__ import annotations

from collections import deque

import torch


class MemoryBank:
    """Holds up to ``slots`` memories (B, D, h, w), newest last; the oldest drops out.

    The caller decides the direction along z by the order in which it pushes slices.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a memory bank needs at least one slot")
        self.slots = slots
        self._items: deque[torch.Tensor] = deque(maxlen=slots)
        #: the mask probabilities of the slice pushed last (None: none, or not given)
        self.last_masks: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget every slice (the state of slice 0 of a stack)."""
        self._items.clear()
        self.last_masks = None

    def push(self, memory: torch.Tensor, masks: torch.Tensor | None = None) -> None:
        """Add the memory of the slice just processed (and its mask probabilities)."""
        if self._items and memory.shape != self._items[-1].shape:
            raise ValueError(
                f"memory shape {tuple(memory.shape)} differs from the bank's "
                f"{tuple(self._items[-1].shape)}; reset() before changing tiles"
            )
        self._items.append(memory)
        self.last_masks = masks

    def read(self) -> list[tuple[torch.Tensor, int]]:
        """(memory, z-distance) pairs, newest first: the previous slice has distance 1."""
        return [(m, d) for d, m in enumerate(reversed(self._items), start=1)]

    def __len__(self) -> int:
        return len(self._items)
