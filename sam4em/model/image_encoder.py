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
    """Normalises grey EM tiles (B, 1, H, W, values 0..255) and runs the ViT on them.

    With ``stem_channels`` the ViT's tokens come from a convolutional map at 1/8 of the
    tile (a 2x2 strided convolution, in place of the 16 x 16 patchify step): for
    random-initialised encoders, whose patch embedding has nothing to keep.
    """

    def __init__(self, vit: ImageEncoderViT, *, stem_channels: int = 0) -> None:
        super().__init__()
        self.vit = vit
        self.stem = None
        if stem_channels:
            embed_dim = vit.patch_embed.proj.out_channels
            self.stem = nn.Conv2d(stem_channels, embed_dim, kernel_size=2, stride=2)
            del self.vit.patch_embed
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor, eighth: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings (B, neck_dim, H/16, W/16) of grey tiles (B, 1, H, W); a model
        with a stem reads its tokens from ``eighth``, the (B, C, H/8, W/8) map."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected tiles of shape (B, 1, H, W), got {tuple(images.shape)}")
        if self.stem is not None:
            if eighth is None:
                raise ValueError("this encoder takes its tokens from a 1/8-resolution map")
            return self._from_tokens(self.stem(eighth).permute(0, 2, 3, 1))
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return self.vit((x - self.pixel_mean) / self.pixel_std)

    def _from_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The ViT after its patch embedding: tokens (B, h, w, C) -> embeddings."""
        vit = self.vit
        if vit.pos_embed is not None:
            x = x + vit.pos_embed
        for block in vit.blocks:
            x = block(x)
        return vit.neck(x.permute(0, 3, 1, 2))
