"""Trained checkpoints: only what was trained, plus what is needed to rebuild the rest.

A checkpoint holds the trainable tensors (LoRA adapters, or the whole encoder when it
was trained fully; memory; both decoders; prompt generator), the model config, the class
names, the identity of the base weights (file name and MD5 of the SAM checkpoint, or
preset, seed and SHA-256 of a random initialisation) and the package versions. Loading is
strict and refuses a base or a config that differs from the one trained with.
"""

from __future__ import annotations

import io
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sam4em.io.atomic import write_bytes_atomic
from sam4em.model.lora import lora_layers
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam_weights import CheckpointError, load_torch_file

if TYPE_CHECKING:
    from sam4em.model.sam4em_model import SAM4EM

FORMAT = "sam4em-checkpoint/1"


def trainable_state(model: SAM4EM) -> dict[str, torch.Tensor]:
    """The tensors of the trained set (see :meth:`SAM4EM.is_trained`): parameters, and
    the running statistics of the BatchNorm layers among them (``model.high_res_norm``)."""
    tensors = dict(model.named_parameters())
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            tensors |= {f"{prefix}.{n}": b for n, b in module.named_buffers(recurse=False)}
    return {n: t.detach().cpu().clone() for n, t in tensors.items() if model.is_trained(n)}


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("sam4em", "torch", "peft", "segment-anything"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def save_checkpoint(
    model: SAM4EM, path: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write the trained part of ``model`` to ``path`` atomically."""
    if any(layer.merged for layer in lora_layers(model)):
        raise ValueError("LoRA adapters are merged into the base weights; save before merging")
    payload = {
        "format": FORMAT,
        "model_config": model.config.to_dict(),
        "classes": list(model.config.classes),
        "base": model.base_identity,
        "versions": _versions(),
        "state_dict": trainable_state(model),
        "extra": extra or {},
    }
    return _write(payload, path)


def _write(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def uses_memory(extra: dict[str, Any]) -> bool:
    """Whether a checkpoint's model runs with its memory: not when its ``extra`` says
    the stage-1 weights were chosen over stage 2 (see :mod:`sam4em.train.stage_choice`);
    checkpoints from before that choice do."""
    return bool(extra.get("memory", True))


def update_extra(path: str | os.PathLike[str], changes: dict[str, Any]) -> Path:
    """Add ``changes`` to the ``extra`` record of the checkpoint at ``path`` (atomically;
    the weights stay as they are)."""
    payload = read_checkpoint(path)
    payload["extra"] = payload.get("extra", {}) | changes
    return _write(payload, path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw contents of a sam4em checkpoint; a clear error for anything else."""
    payload = load_torch_file(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sam4em checkpoint (expected format {FORMAT})")
    return payload


def load_checkpoint(
    path: str | os.PathLike[str],
    base_checkpoint: str | os.PathLike[str] | None = None,
    expect: ModelConfig | None = None,
) -> tuple[SAM4EM, dict[str, Any]]:
    """Rebuild the model of checkpoint ``path``; returns (model, checkpoint contents).

    ``base_checkpoint`` points at the SAM weights when they moved since training;
    ``expect`` is the config the caller needs (the SAM weights path aside).
    """
    payload = read_checkpoint(path)
    config_dict = dict(payload["model_config"])
    config_dict.setdefault("high_res", False)  # written before the high-resolution path
    if config_dict["high_res"] and "high_res_width" not in config_dict:
        raise CheckpointError(
            f"{path}: written with an earlier layout of the high-resolution path; retrain it"
        )
    config_dict.setdefault("high_res_norm", "layer")  # written before the choice existed
    if base_checkpoint is not None:
        config_dict["checkpoint"] = str(base_checkpoint)
    config = ModelConfig.from_dict(config_dict)
    if expect is not None:
        mine = {k: v for k, v in config.to_dict().items() if k != "checkpoint"}
        want = {k: v for k, v in expect.to_dict().items() if k != "checkpoint"}
        diff = sorted(k for k in mine if mine[k] != want.get(k))
        if diff:
            details = "; ".join(
                f"{k}: checkpoint {mine[k]!r}, expected {want.get(k)!r}" for k in diff
            )
            raise CheckpointError(f"{path}: model config differs ({details})")
    from sam4em.model.sam4em_model import build_model  # segment-anything: only to rebuild

    model = build_model(config)
    if model.base_identity != payload["base"]:
        raise CheckpointError(
            f"{path}: trained on base weights {payload['base']}, but the base found now is "
            f"{model.base_identity}"
        )
    saved = payload["state_dict"]
    expected = set(trainable_state(model))
    if set(saved) != expected:
        missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise CheckpointError(
            f"{path}: trained tensors do not fit the model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    result = model.load_state_dict(saved, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: unexpected tensors {result.unexpected_keys[:3]}")
    return model, payload
