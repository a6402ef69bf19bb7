"""Cross-attention of the current slice's embedding to the memory bank."""

from __future__ import annotations

import torch
from torch import nn

from sam4em.model.memory_bank import MemoryBank


class MemoryAttentionLayer(nn.Module):
    """Pre-norm cross-attention and MLP, each a residual branch scaled by a learnt gain."""

    def __init__(
        self, dim: int, mem_dim: int, heads: int, mlp_dim: int, layer_scale: float
    ) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(
            dim, heads, kdim=mem_dim, vdim=mem_dim, batch_first=True
        )
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.gain_attn = nn.Parameter(torch.full((dim,), layer_scale))
        self.gain_mlp = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(
        self, x: torch.Tensor, x_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        """x (B, N, dim) attends to memory (B, M, mem_dim)."""
        query = self.norm_attn(x) + x_pos
        attended, _ = self.cross_attn(query, memory + memory_pos, memory, need_weights=False)
        x = x + self.gain_attn * attended
        return x + self.gain_mlp * self.mlp(self.norm_mlp(x))


class MemoryAttention(nn.Module):
    """Conditions an image embedding on the memories of previous slices.

    Each memory token carries a 2D positional encoding and an embedding of its slot's
    distance in z. With an empty bank (the first slice) the embedding passes unchanged.
    """

    def __init__(
        self,
        dim: int,
        mem_dim: int,
        slots: int,
        layers: int = 1,
        heads: int = 4,
        layer_scale: float = 0.1,
    ) -> None:
        super().__init__()
        self.distance_embed = nn.Embedding(slots + 1, mem_dim)
        self.pos_proj = nn.Linear(dim, mem_dim)
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(dim, mem_dim, heads, 4 * dim, layer_scale) for _ in range(layers)
        )

    def forward(
        self, embedding: torch.Tensor, image_pe: torch.Tensor, bank: MemoryBank
    ) -> torch.Tensor:
        """embedding (B, dim, h, w), image_pe (1, dim, h, w) -> (B, dim, h, w)."""
        entries = bank.read()
        if not entries:
            return embedding
        b, c, h, w = embedding.shape
        x = embedding.flatten(2).transpose(1, 2)
        pos = image_pe.flatten(2).transpose(1, 2)
        mem_pos = self.pos_proj(pos)
        tokens, token_pos = [], []
        for memory, distance in entries:
            tokens.append(memory.flatten(2).transpose(1, 2) + self.distance_embed.weight[distance])
            token_pos.append(mem_pos)
        memory_tokens = torch.cat(tokens, dim=1)
        memory_pos = torch.cat(token_pos, dim=1).expand(b, -1, -1)
        for layer in self.layers:
            x = layer(x, pos, memory_tokens, memory_pos)
        return x.transpose(1, 2).reshape(b, c, h, w)
