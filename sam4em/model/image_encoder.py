"""SAM's ViT image encoder, fed with single-channel EM slices."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from sam4em.model.model_config import PATCH_SIZE, VitPreset

# SAM's normalisation constants (RGB, 0..255 scale)
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def build_vit(preset: VitPreset, img_size: int) -> ImageEncoderViT:
    """The segment-anything ``ImageEncoderViT`` of ``preset`` at ``img_size`` pixels."""
    return ImageEncoderViT(
        img_size=img_size,
        patch_size=PATCH_SIZE,
        embed_dim=preset.embed_dim,
        depth=preset.depth,
        num_heads=preset.num_heads,
        mlp_ratio=4.0,
        out_chans=preset.neck_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_abs_pos=True,
        use_rel_pos=True,
        window_size=preset.window_size,
        global_attn_indexes=preset.global_attn_indexes,
    )


class EMImageEncoder(nn.Module):
    """Normalises grey EM tiles (B, 1, H, W, values 0..255) and runs the ViT on them."""

    def __init__(self, vit: ImageEncoderViT) -> None:
        super().__init__()
        self.vit = vit
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, neck_dim, H/16, W/16) of grey tiles (B, 1, H, W)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected tiles of shape (B, 1, H, W), got {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return self.vit((x - self.pixel_mean) / self.pixel_std)
