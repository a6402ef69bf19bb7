"""A SAM mask decoder with no user prompt and one mask output per class."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from segment_anything.modeling.transformer import TwoWayTransformer
from torch import nn

from sam4em.model.channels_last import GELU
from sam4em.model.high_res import conv_block, high_res_channels


@dataclass
class DecoderOutput:
    """What one decoding stage produces, at 4x the embedding resolution."""

    logits: torch.Tensor  # (B, C, r*h, r*w) one multi-label logit map per class
    tokens: torch.Tensor  # (B, C, dim) the class tokens after the transformer
    features: torch.Tensor  # (B, dim // 8, r*h, r*w) upscaled image features
    # r = 4 (tokens upscaled twice), or 8 with high-resolution features (a third step)


class PromptFreeMaskDecoder(nn.Module):
    """SAM's two-way transformer decoder with one learnt token per class.

    Module names follow segment-anything's ``MaskDecoder`` (``transformer``,
    ``mask_tokens``, ``output_upscaling``, ``output_hypernetworks_mlps``) so that SAM's
    weights load where shapes allow. ``high_res_norm`` is the normalisation of its 3x3
    convolutions (see :func:`~sam4em.model.high_res.conv_block`). With ``skip_features``
    another stage's upscaled features are added before the masks are formed (the H-SAM
    skip connection). With ``high_res`` (the path's width) the maps of a
    :class:`~sam4em.model.high_res.HighResPath` are added at 1/8 and 1/4 of the tile, a
    final 3x3-conv step upscales to 1/2 of the tile, where the 1/2 map joins in, and a
    3x3 convolution follows each join before the masks are formed.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_classes: int,
        depth: int = 2,
        heads: int = 8,
        mlp_dim: int = 2048,
        skip_features: bool = False,
        high_res: int = 0,
        high_res_norm: str = "layer",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.transformer = TwoWayTransformer(
            depth=depth, embedding_dim=dim, num_heads=heads, mlp_dim=mlp_dim
        )
        self.mask_tokens = nn.Embedding(num_classes, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(num_classes)
        )
        self.skip_proj = nn.Conv2d(dim // 8, dim // 8, kernel_size=1) if skip_features else None
        up_channels = (dim // 8, dim // 8, dim // 4)  # the upscaling's at 1/2, 1/4, 1/8
        self.high_res_proj = (
            nn.ModuleList(
                nn.Conv2d(c, u, kernel_size=1)
                for c, u in zip(high_res_channels(high_res), up_channels, strict=True)
            )
            if high_res
            else None
        )
        self.high_res_refine = (
            nn.ModuleList(conv_block(u, u, norm=high_res_norm) for u in up_channels)
            if high_res
            else None
        )
        self.final_upscaling = (
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                conv_block(dim // 8, dim // 8, norm=high_res_norm),
            )
            if high_res
            else None
        )

    def _upscale(
        self, src: torch.Tensor, high_res: tuple[torch.Tensor, ...] | None
    ) -> torch.Tensor:
        """Tokens (B, dim, h, w) to features at 4x (8x with the high-resolution maps)."""
        if high_res is None:
            return self.output_upscaling(src)
        if self.high_res_proj is None or self.high_res_refine is None or not self.final_upscaling:
            raise ValueError("this decoder was built without high_res")
        up, (proj2, proj4, proj8), (refine2, refine4, refine8) = (
            self.output_upscaling,
            self.high_res_proj,
            self.high_res_refine,
        )
        half, quarter, eighth = high_res
        x = refine8(up[2](up[1](up[0](src) + proj8(eighth))))
        x = refine4(up[4](up[3](x) + proj4(quarter)))
        return refine2(self.final_upscaling(x) + proj2(half))

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompts: torch.Tensor,
        dense_prompts: torch.Tensor,
        skip: torch.Tensor | None = None,
        high_res: tuple[torch.Tensor, ...] | None = None,
    ) -> DecoderOutput:
        """Decode (B, dim, h, w) embeddings with (B, N, dim) sparse and dense prompts."""
        b, c, h, w = image_embeddings.shape
        class_tokens = self.mask_tokens.weight.unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat([class_tokens, sparse_prompts], dim=1)
        src = image_embeddings + dense_prompts
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        class_out = hs[:, : self.num_classes]
        features = self._upscale(src.transpose(1, 2).reshape(b, c, h, w), high_res)
        if skip is not None:
            if self.skip_proj is None:
                raise ValueError("this decoder was built without skip_features")
            features = features + self.skip_proj(skip)
        hyper = torch.stack(
            [mlp(class_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        fb, fc, fh, fw = features.shape
        logits = (hyper @ features.reshape(fb, fc, fh * fw)).reshape(fb, -1, fh, fw)
        return DecoderOutput(logits=logits, tokens=class_out, features=features)
