"""Where the model runs: device choice, mixed precision and host-to-device copies, for
training and inference. Each CUDA-only speed-up falls back to the plain path elsewhere."""

from __future__ import annotations

import torch

from sam4em.errors import InputDataError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error.
    On CUDA, cuDNN picks its fastest kernels for the (fixed) tile shapes and float32
    matrix products may use TF32."""
    if name == "cuda" and not torch.cuda.is_available():
        raise InputDataError("inference.device: cuda requested but no GPU is visible")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return device


def autocast(device: torch.device, bf16: bool | None = None) -> torch.autocast:
    """bf16 autocast: on CUDA by default, on the CPU when ``bf16`` asks for it (the
    device check runs the CUDA path there); ``bf16=False`` turns it off."""
    enabled = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a
    CPU with bf16 instructions (AVX512-BF16 or AMX, as oneDNN reports); elsewhere bf16
    is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory
    with a non-blocking copy (CUDA orders it before any kernel that reads it)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
