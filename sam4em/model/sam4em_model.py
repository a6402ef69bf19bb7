"""The assembled SAM4EM network and its builder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn

from sam4em.io.download import file_digest
from sam4em.model.high_res import HighResPath, high_res_channels
from sam4em.model.image_encoder import EMImageEncoder, build_vit
from sam4em.model.lora import add_lora
from sam4em.model.mask_decoder import PromptFreeMaskDecoder
from sam4em.model.memory_attention import MemoryAttention
from sam4em.model.memory_bank import MemoryBank
from sam4em.model.memory_encoder import MemoryEncoder
from sam4em.model.memory_prior import MemoryPrior
from sam4em.model.model_config import ModelConfig
from sam4em.model.prompt_generator import StagePromptGenerator
from sam4em.model.sam_weights import (
    CheckpointError,
    detect_preset,
    fit_decoder_state,
    fit_encoder_state,
    prompt_state,
    read_sam_checkpoint,
)


@dataclass
class SegmentationOutput:
    """Logits of both stages at the tile size, and the final low-resolution logits."""

    stage1: torch.Tensor  # (B, C, H, W)
    stage2: torch.Tensor  # (B, C, H, W); equals stage1 for a single-stage model
    low_res: torch.Tensor  # (B, C, H/4, W/4) final-stage logits (what the memory sees)

    @property
    def final(self) -> torch.Tensor:
        """The model's answer: stage-2 logits."""
        return self.stage2


class SAM4EM(nn.Module):
    """Prompt-free SAM for EM: encoder, 3D memory, two-stage multi-class decoding.

    Entry points: ``forward`` (2D tiles, memory off), ``step`` (one slice with a memory
    bank the caller owns) and ``forward_sequence`` (slices in z order, memory on).
    None of them takes labels. With ``config.high_res`` a convolutional path feeds the
    tile's fine detail into both decoders (see :mod:`sam4em.model.high_res`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        vit = config.vit
        dim, n_cls = vit.neck_dim, len(config.classes)
        width = config.high_res_width if config.high_res else 0
        self.image_encoder = EMImageEncoder(
            build_vit(vit, config.img_size),
            stem_channels=high_res_channels(width)[2] if config.conv_stem else 0,
        )
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.no_mask_embed = nn.Embedding(1, dim)
        norm = config.high_res_norm
        self.high_res = HighResPath(width=width, norm=norm) if width else None
        decoder_args = {
            "dim": dim,
            "num_classes": n_cls,
            "heads": vit.decoder_heads,
            "mlp_dim": vit.decoder_mlp_dim,
            "high_res": width,
            "high_res_norm": norm,
        }
        self.decoder1 = PromptFreeMaskDecoder(**decoder_args)
        self.prompt_generator = StagePromptGenerator(dim, n_cls) if config.two_stage else None
        self.decoder2 = (
            PromptFreeMaskDecoder(**decoder_args, skip_features=True) if config.two_stage else None
        )
        mem = config.memory
        self.memory_encoder = MemoryEncoder(dim, mem.dim, n_cls)
        self.memory_attention = MemoryAttention(
            dim, mem.dim, mem.slots, mem.layers, mem.heads, mem.layer_scale
        )
        self.memory_prior = (
            MemoryPrior(num_classes=n_cls, channels=high_res_channels(width))
            if mem.high_res and width
            else None
        )
        self.base_identity: dict[str, Any] = {}

    def is_trained(self, name: str) -> bool:
        """Whether parameter ``name`` belongs to the trained set (what checkpoints store):
        LoRA adapters (or the whole encoder when ``encoder_trainable`` is ``all``), the
        memory, the decoders, the prompt generator and the no-mask embedding."""
        if name.startswith("image_encoder."):
            return self.config.encoder_trainable == "all" or "lora_" in name
        return True

    def image_pe(self) -> torch.Tensor:
        """Dense 2D positional encoding of the embedding grid, (1, dim, h, w)."""
        n = self.config.embedding_size
        return self.pe_layer((n, n)).unsqueeze(0)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Image embeddings of grey tiles (B, 1, S, S), values 0..255, and the tiles'
        high-resolution maps (None for a model without the path)."""
        high_res = None if self.high_res is None else self.high_res(images)
        eighth = high_res[2] if high_res is not None and self.config.conv_stem else None
        return self.image_encoder(images, eighth), high_res

    def decode(
        self, embeddings: torch.Tensor, high_res: tuple[torch.Tensor, ...] | None = None
    ) -> SegmentationOutput:
        """Both decoding stages on (possibly memory-conditioned) embeddings."""
        b = embeddings.shape[0]
        pe = self.image_pe()
        sparse = embeddings.new_zeros((b, 0, embeddings.shape[1]))
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        out1 = self.decoder1(embeddings, pe, sparse, dense, high_res=high_res)
        out2 = out1
        if self.decoder2 is not None and self.prompt_generator is not None:
            sparse2, dense2 = self.prompt_generator(out1, embeddings.shape[-1])
            out2 = self.decoder2(
                embeddings, pe, sparse2, dense2, skip=out1.features, high_res=high_res
            )
        size = (self.config.img_size, self.config.img_size)
        up = lambda x: F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)  # noqa: E731
        low_res = F.adaptive_avg_pool2d(out2.logits, 4 * embeddings.shape[-1])
        return SegmentationOutput(stage1=up(out1.logits), stage2=up(out2.logits), low_res=low_res)

    def forward(self, images: torch.Tensor) -> SegmentationOutput:
        """2D forward of a batch of tiles, memory off."""
        return self.decode(*self.encode(images))

    def new_memory(self) -> MemoryBank:
        """An empty memory bank sized for this model."""
        return MemoryBank(self.config.memory.slots)

    def step(self, images: torch.Tensor, bank: MemoryBank) -> SegmentationOutput:
        """Segment one slice's tiles (B, 1, S, S) using ``bank``, then store this slice in it."""
        embeddings, high_res = self.encode(images)
        conditioned = self.memory_attention(embeddings, self.image_pe(), bank)
        if self.memory_prior is not None and high_res is not None and bank.last_masks is not None:
            high_res = self.memory_prior(bank.last_masks, high_res)
        output = self.decode(conditioned, high_res)
        masks = torch.sigmoid(output.low_res.detach())
        bank.push(self.memory_encoder(embeddings, masks), masks)
        return output

    def forward_sequence(self, images: torch.Tensor) -> list[SegmentationOutput]:
        """Segment (B, T, 1, S, S): T slices of the same tiles in z order, memory on."""
        bank = self.new_memory()
        return [self.step(images[:, t], bank) for t in range(images.shape[1])]


def _fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_sam_weights(model: SAM4EM, path: Path) -> None:
    state = read_sam_checkpoint(path)
    found = detect_preset(state)
    if found != model.config.preset:
        raise CheckpointError(
            f"{path}: checkpoint is a {found} model, config expects {model.config.preset}"
        )
    vit = model.image_encoder.vit
    vit.load_state_dict(fit_encoder_state(state, vit.state_dict(), str(path)))
    decoders = [model.decoder1] + ([model.decoder2] if model.decoder2 is not None else [])
    for decoder in decoders:
        decoder.load_state_dict(fit_decoder_state(state, decoder.state_dict()), strict=False)
    prompts = prompt_state(state)
    own = model.state_dict()
    model.load_state_dict(
        {k: v for k, v in prompts.items() if v.shape == own[k].shape}, strict=False
    )


def build_model(config: ModelConfig) -> SAM4EM:
    """Build the network: seeded init, SAM weights if configured, then LoRA and freezing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SAM4EM(config)
    if config.checkpoint:
        path = Path(config.checkpoint)
        _load_sam_weights(model, path)
        model.base_identity = {"kind": "sam", "file": path.name, "md5": file_digest(path, "md5")}
    else:
        base = {
            k: v
            for k, v in model.state_dict().items()
            if k.startswith(("image_encoder.", "pe_layer."))
        }
        model.base_identity = {
            "kind": "random",
            "preset": config.preset,
            "seed": config.seed,
            "sha256": _fingerprint(base),
        }
    if config.encoder_trainable == "lora":  # the adapters' init is seeded too
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            add_lora(model.image_encoder.vit, config.lora)
    return model
