"""Reading official SAM checkpoints and fitting them to another input size.

An official checkpoint (``sam_vit_b_01ec64.pth`` etc.) is a state dict with
``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*`` keys, made for 1024 px
inputs. At another size (any multiple of 16) the absolute position embedding is resized
bicubically and the relative-position tables of the global-attention blocks linearly,
to the shapes the target model expects.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from sam4em.errors import Sam4emError
from sam4em.model.model_config import PRESETS

Tensor = torch.Tensor


class CheckpointError(Sam4emError):
    """A weights file is missing, damaged or of another model than expected."""


def load_torch_file(path: str | os.PathLike[str], what: str) -> object:
    """``torch.load`` of plain tensors and containers; clear errors for missing or damaged
    files (``what`` names the kind of file in the message)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot read {what} (truncated or not a torch file: {first})"
        ) from None


def read_sam_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load an official SAM state dict; a clear error for anything else."""
    state = load_torch_file(path, "SAM checkpoint")
    if not isinstance(state, dict) or not any(
        isinstance(k, str) and k.startswith("image_encoder.") for k in state
    ):
        raise CheckpointError(
            f"{path}: not a SAM checkpoint (expected a state dict with image_encoder.*, "
            "prompt_encoder.* and mask_decoder.* keys)"
        )
    return state


def detect_preset(state: dict[str, Tensor]) -> str:
    """Which official encoder (vit_b, vit_l, vit_h) a SAM state dict holds."""
    embed = state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, p in PRESETS.items():
        if p.embed_dim == embed and p.depth == depth:
            return name
    return f"unknown (embed {embed}, {depth} blocks)"


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _resize_pos_embed(pos: Tensor, shape: torch.Size) -> Tensor:
    # (1, H, W, C) -> (1, H', W', C)
    x = pos.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(shape[1], shape[2]), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: Tensor, length: int) -> Tensor:
    # (L, C) -> (L', C)
    x = table.float().t().unsqueeze(0)
    x = F.interpolate(x, size=length, mode="linear", align_corners=False)
    return x.squeeze(0).t().to(table.dtype)


def fit_encoder_state(
    state: dict[str, Tensor], target: dict[str, Tensor], origin: str
) -> dict[str, Tensor]:
    """The ``image_encoder.*`` weights of ``state``, resized to the shapes of ``target``
    (the state dict of the encoder being loaded)."""
    enc = _strip(state, "image_encoder.")
    missing = sorted(set(target) - set(enc))
    if missing:
        raise CheckpointError(f"{origin}: image encoder weights missing: {', '.join(missing[:5])}")
    fitted = {}
    for key, want in target.items():
        value = enc[key]
        if value.shape != want.shape:
            if key == "pos_embed":
                value = _resize_pos_embed(value, want.shape)
            elif key.endswith(("rel_pos_h", "rel_pos_w")) and value.shape[1] == want.shape[1]:
                value = _resize_rel_pos(value, want.shape[0])
            else:
                raise CheckpointError(
                    f"{origin}: image_encoder.{key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(want.shape)}"
                )
        fitted[key] = value
    return fitted


def fit_decoder_state(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """SAM's ``mask_decoder.*`` weights for a prompt-free decoder, where shapes allow.

    Mask tokens and hypernetwork MLPs are taken from SAM's first ones, one per class;
    weights whose shapes differ (another width) are left at their initial values.
    """
    dec = _strip(state, "mask_decoder.")
    out = {}
    for key, want in target.items():
        value = dec.get(key)
        if key == "mask_tokens.weight" and value is not None:
            n = min(value.shape[0], want.shape[0])
            value = torch.cat([value[:n], want[n:]]) if value.shape[1] == want.shape[1] else None
        if value is not None and value.shape == want.shape:
            out[key] = value
    return out


def prompt_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """SAM's positional-encoding matrix and no-mask embedding."""
    return {
        "pe_layer.positional_encoding_gaussian_matrix": state[
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
        ],
        "no_mask_embed.weight": state["prompt_encoder.no_mask_embed.weight"],
    }
