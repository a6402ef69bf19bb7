"""LoRA adapters on the image encoder through ``peft``.

``peft`` is imported only where adapters are made or looked for in a model that could
hold them: it loads ``transformers`` and takes seconds, which every command and workflow
job would otherwise pay, LoRA or not.
"""

from __future__ import annotations

import sys

from torch import nn

from sam4em.model.model_config import LoraSettings

# encoder module names (segment-anything ImageEncoderViT) for each target kind
_TARGET_PATTERNS = {
    "qkv": r"blocks\.\d+\.attn\.qkv",
    "proj": r"blocks\.\d+\.attn\.proj",
    "mlp": r"blocks\.\d+\.mlp\.lin[12]",
}


def add_lora(encoder: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject LoRA adapters into ``encoder`` in place; only the adapters stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    pattern = "|".join(_TARGET_PATTERNS[t] for t in settings.targets)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=rf".*(?:{pattern})$",
        bias="none",
    )
    inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad = "lora_" in name
    return encoder


def lora_layers(module: nn.Module) -> list[nn.Module]:
    """Every LoRA-adapted layer (``peft``'s ``LoraLayer``) inside ``module``."""
    if "peft.tuners.lora" not in sys.modules:  # no adapter can exist before peft is loaded
        return []
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def merge_lora(module: nn.Module) -> int:
    """Fold the adapters into the base weights (for fast inference); returns how many."""
    layers = lora_layers(module)
    for layer in layers:
        if not layer.merged:
            layer.merge()
    return len(layers)
