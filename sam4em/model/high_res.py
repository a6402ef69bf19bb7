"""A convolutional path that gives the decoders fine detail the ViT tokens lack.

The ViT sees the tile in 16 x 16 patches, so a decoder that only upsamples its tokens
draws masks in blocks. This path runs strided convolutions on the tile itself and hands
the decoders feature maps at 1/2, 1/4 and 1/8 of the tile, which they add into their
upscaling (the pattern of SAM2's high-resolution features and HQ-SAM's early-layer
fusion). With official SAM weights it runs beside the patch embedding, so the weights
load unchanged; a random-initialised encoder may instead take its tokens from the path's
1/8 map (``model.conv_stem``, see :class:`~sam4em.model.image_encoder.EMImageEncoder`).
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from sam4em.model.channels_last import GELU, BatchNorm2d
from sam4em.model.model_config import NORMS


def conv_block(cin: int, cout: int, *, norm: str, stride: int = 1) -> nn.Sequential:
    """A 3x3 convolution (``stride`` 2 halves the resolution), normalised, then GELU.

    ``norm``: "layer" normalises each pixel over its channels (SAM's LayerNorm2d);
    "batch" is BatchNorm (batch statistics in training, running ones in eval), which
    is about an eighth cheaper per training step on a CPU.
    """
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1),
        LayerNorm2d(cout) if norm == "layer" else BatchNorm2d(cout),
        GELU(),
    )


def high_res_channels(width: int) -> tuple[int, int, int]:
    """Channels of the path's maps at 1/2, 1/4 and 1/8 of the tile."""
    return width, 2 * width, 4 * width


class HighResPath(nn.Module):
    """Grey tiles (B, 1, S, S), values 0..255 -> feature maps at S/2, S/4 and S/8."""

    def __init__(self, *, width: int, norm: str = "layer") -> None:
        super().__init__()
        c2, c4, c8 = high_res_channels(width)
        block = lambda a, b, s=1: conv_block(a, b, norm=norm, stride=s)  # noqa: E731
        self.down2 = nn.Sequential(block(1, c2, 2), block(c2, c2))
        self.down4 = nn.Sequential(block(c2, c4, 2), block(c4, c4))
        self.down8 = nn.Sequential(block(c4, c8, 2), block(c8, c8))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1/2, 1/4, 1/8) feature maps of the tiles."""
        half = self.down2(images[:, :1] / 127.5 - 1)
        quarter = self.down4(half)
        return half, quarter, self.down8(quarter)
