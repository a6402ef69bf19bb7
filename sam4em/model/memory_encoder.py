"""Turns one processed slice into a memory: its image embedding plus its predicted masks."""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from sam4em.model.channels_last import GELU


class MemoryEncoder(nn.Module):
    """(embedding (B, dim, h, w), mask probabilities (B, C, 4h, 4w)) -> (B, mem_dim, h, w)."""

    def __init__(self, dim: int, mem_dim: int, num_classes: int, mask_chans: int = 16) -> None:
        super().__init__()
        self.embed_proj = nn.Conv2d(dim, mem_dim, kernel_size=1)
        self.mask_encoder = nn.Sequential(
            nn.Conv2d(num_classes, mask_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans),
            GELU(),
            nn.Conv2d(mask_chans, mem_dim, kernel_size=2, stride=2),
        )
        self.fuse = nn.Sequential(GELU(), nn.Conv2d(mem_dim, mem_dim, kernel_size=3, padding=1))

    def forward(self, embedding: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """The memory of one slice."""
        return self.fuse(self.embed_proj(embedding) + self.mask_encoder(mask_probs))
