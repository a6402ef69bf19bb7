"""Stage-2 prompts generated from stage-1 output: no user ever gives a prompt."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from sam4em.model.channels_last import GELU
from sam4em.model.mask_decoder import DecoderOutput


class StagePromptGenerator(nn.Module):
    """Dense prompt from stage-1 mask probabilities, sparse prompts from its class tokens."""

    def __init__(self, dim: int, num_classes: int, mask_chans: int = 16) -> None:
        super().__init__()
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(num_classes, mask_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans // 4),
            GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans),
            GELU(),
            nn.Conv2d(mask_chans, dim, kernel_size=1),
        )
        self.token_proj = MLP(dim, dim, dim, 2)

    def forward(self, stage1: DecoderOutput, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sparse (B, C, dim), dense (B, dim, grid, grid)) prompt embeddings for stage 2.

        Stage-1 masks are pooled to 4 x ``grid`` (they are finer with high-res features).
        """
        probs = F.adaptive_avg_pool2d(torch.sigmoid(stage1.logits), 4 * grid)
        dense = self.mask_downscaling(probs)
        return self.token_proj(stage1.tokens), dense
