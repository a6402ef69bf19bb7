"""The previous slice's masks as a prior on the current slice's high-resolution maps.

The memory attention conditions only the coarse image embedding, while a mask's detail
comes from the high-resolution path of the slice itself. This module feeds the masks
predicted for the previous slice (distance 1 in the memory bank) into that path: a small
convolutional encoder of the probabilities, resized to each map and added to it. Its
output convolutions start at zero, so it changes nothing until stage 2 trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam4em.model.channels_last import GELU


class MemoryPrior(nn.Module):
    """(masks (B, C, h, w) in 0..1, maps at S/2, S/4, S/8) -> the maps plus the prior."""

    def __init__(self, *, num_classes: int, channels: tuple[int, ...], hidden: int = 16) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(num_classes, hidden, kernel_size=3, padding=1),
            GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            GELU(),
        )
        self.project = nn.ModuleList(nn.Conv2d(hidden, c, kernel_size=1) for c in channels)
        for conv in self.project:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(
        self, masks: torch.Tensor, maps: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, ...]:
        """Each map plus the previous slice's masks encoded at the map's resolution."""
        features = self.encode(masks * 2 - 1)
        out = []
        for conv, m in zip(self.project, maps, strict=True):
            sized = F.interpolate(features, size=m.shape[-2:], mode="bilinear", align_corners=False)
            out.append(m + conv(sized))
        return tuple(out)
