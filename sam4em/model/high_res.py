"""A light convolutional path that gives the decoders fine detail the ViT tokens lack.

The ViT sees the tile in 16 x 16 patches, so a decoder that only upsamples its tokens
draws masks in blocks. This path runs a few strided convolutions on the tile itself and
hands the decoders feature maps at 1/2, 1/4 and 1/8 of the tile, which they add into
their upscaling (the pattern of SAM2's high-resolution features and HQ-SAM's early-layer
fusion). It runs beside the patch embedding, so official SAM weights load unchanged.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


def _down(cin: int, cout: int) -> nn.Sequential:
    """Halve the resolution: strided 3x3 conv, then a 3x3 conv, each normalised."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1),
        LayerNorm2d(cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, kernel_size=3, padding=1),
        LayerNorm2d(cout),
        nn.GELU(),
    )


def high_res_channels(dim: int) -> tuple[int, int, int]:
    """Channels at 1/2, 1/4 and 1/8: those of a decoder's upscaling at each resolution."""
    return dim // 8, dim // 8, dim // 4


class HighResPath(nn.Module):
    """Grey tiles (B, 1, S, S), values 0..255 -> feature maps at S/2, S/4 and S/8."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        c2, c4, c8 = high_res_channels(dim)
        self.down2 = _down(1, c2)
        self.down4 = _down(c2, c4)
        self.down8 = _down(c4, c8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1/2, 1/4, 1/8) feature maps of the tiles."""
        half = self.down2(images[:, :1] / 127.5 - 1)
        quarter = self.down4(half)
        return half, quarter, self.down8(quarter)
