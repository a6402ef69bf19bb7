"""Model settings (a frozen record stored in every checkpoint) and the ViT presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sam4em.errors import ConfigError


@dataclass(frozen=True)
class VitPreset:
    """Shape of one SAM image encoder, its neck and its mask decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    neck_dim: int  # image embedding channels = decoder width
    decoder_mlp_dim: int
    decoder_heads: int


PRESETS: dict[str, VitPreset] = {
    # a small encoder for CPU tests and demos, random-initialised
    "vit_tiny": VitPreset(192, 6, 3, (2, 5), 8, 128, 512, 4),
    # the official SAM encoders (https://github.com/facebookresearch/segment-anything)
    "vit_b": VitPreset(768, 12, 12, (2, 5, 8, 11), 14, 256, 2048, 8),
    "vit_l": VitPreset(1024, 24, 16, (5, 11, 17, 23), 14, 256, 2048, 8),
    "vit_h": VitPreset(1280, 32, 16, (7, 15, 23, 31), 14, 256, 2048, 8),
}

PATCH_SIZE = 16
NORMS = ("layer", "batch")  # normalisations of the high-resolution path's convolutions
LORA_TARGETS = ("qkv", "proj", "mlp")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters on the encoder's attention (and optionally MLP) projections."""

    rank: int = 4
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)


@dataclass(frozen=True)
class MemorySettings:
    """The 3D memory bank and its cross-attention."""

    slots: int = 4
    dim: int = 64
    layers: int = 1
    heads: int = 4
    layer_scale: float = 0.1
    high_res: bool = False  # the previous slice's masks also feed the high-res maps


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (weights aside)."""

    classes: tuple[str, ...] = ("glia", "mito", "synapse")
    preset: str = "vit_tiny"
    img_size: int = 256
    checkpoint: str | None = None  # official SAM weights (.pth); None: random init
    seed: int = 0  # initialisation of everything not loaded from the checkpoint
    encoder_trainable: str = "lora"  # "lora": base frozen + adapters; "all": full encoder
    two_stage: bool = True
    high_res: bool = True  # the convolutional high-resolution path into both decoders
    high_res_width: int = 32  # its channels at 1/2 of the tile (x2 at 1/4, x4 at 1/8)
    high_res_norm: str = "batch"  # normalisation of its convolutions: "batch" or "layer"
    conv_stem: bool = False  # the encoder's tokens come from the path (random init only)
    lora: LoraSettings = field(default_factory=LoraSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"model.preset: '{self.preset}' is not one of {', '.join(PRESETS)}")
        if self.img_size % PATCH_SIZE or self.img_size < 2 * PATCH_SIZE:
            raise ConfigError(f"model.img_size: {self.img_size} is not a multiple of 16 (>= 32)")
        if self.encoder_trainable not in ("lora", "all"):
            raise ConfigError("model.encoder_trainable: expected 'lora' or 'all'")
        bad = [t for t in self.lora.targets if t not in LORA_TARGETS]
        if bad:
            raise ConfigError(f"model.lora.targets: {bad} not among {list(LORA_TARGETS)}")
        if self.high_res_norm not in NORMS:
            raise ConfigError(f"model.high_res_norm: expected one of {', '.join(NORMS)}")
        if self.conv_stem and not self.high_res:
            raise ConfigError("model.conv_stem: needs model.high_res (the stem is its 1/8 map)")
        if self.conv_stem and self.checkpoint:
            raise ConfigError(
                "model.conv_stem: only for random-initialised encoders (it replaces the "
                "patch embedding that official SAM weights need)"
            )
        if not self.classes:
            raise ConfigError("model: at least one class is needed")
        if self.vit.neck_dim % self.memory.heads:
            raise ConfigError(
                f"model.memory.heads: {self.memory.heads} does not divide the embedding "
                f"width {self.vit.neck_dim} of {self.preset}"
            )

    @property
    def vit(self) -> VitPreset:
        """The preset's shape."""
        return PRESETS[self.preset]

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (img_size / 16)."""
        return self.img_size // PATCH_SIZE

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for checkpoints and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"model: unknown key(s) {sorted(unknown)}")
        data = dict(data)
        if "lora" in data:
            lora = dict(data["lora"])
            lora["targets"] = tuple(lora.get("targets", ("qkv",)))
            data["lora"] = LoraSettings(**lora)
        if "memory" in data:
            data["memory"] = MemorySettings(**data["memory"])
        if "classes" in data:
            data["classes"] = tuple(data["classes"])
        return cls(**data)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelConfig:
        """The model of a validated project config (its ``model`` and ``classes``)."""
        return cls.from_dict({**config["model"], "classes": config["classes"]})
