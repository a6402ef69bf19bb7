"""Per-class BCE + soft Dice on both decoder stages; unlabelled classes are left out."""

from __future__ import annotations

from typing import Any

import torch


class _BCEWithLogits(torch.autograd.Function):
    """Per-pixel BCE of logits against fixed targets, built from ``sigmoid`` and ``log``.

    PyTorch's CPU ``binary_cross_entropy_with_logits`` goes through ``log_sigmoid``,
    whose kernel is about 30x slower than ``sigmoid`` on this project's maps (log1p and
    softplus are as slow). Here BCE = max(x, 0) - x y + log(1 + exp(-|x|)), the last term
    being -log(sigmoid(|x|)) = -log(max(p, 1 - p)) with p = sigmoid(x); the backward is
    the exact (p - y). Targets get no gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """BCE of logits ``x`` against targets ``y``, per pixel."""
        p = torch.sigmoid(x)
        ctx.save_for_backward(p, y)
        return x.clamp_min(0) - x * y - torch.log(torch.maximum(p, 1 - p))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        """d BCE / dx = sigmoid(x) - y."""
        p, y = ctx.saved_tensors
        return grad * (p - y), None


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy of ``logits`` against ``target`` (no reduction); as
    ``F.binary_cross_entropy_with_logits``, faster on the CPU. ``target`` gets no gradient."""
    return _BCEWithLogits.apply(logits, target)


UNKNOWN = 255.0  # a target pixel whose label nobody knows (sam4em.tiling.tiles.UNKNOWN)


def bce_dice(
    logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor, eps: float = 1.0
) -> torch.Tensor:
    """Mean over labelled classes of BCE + (1 - soft Dice); Dice pools the whole batch.

    logits, target (B, C, H, W); labelled (B, C) bool: which classes each example labels.
    Target pixels of value :data:`UNKNOWN` (outside a crop, or unpainted) count in
    neither term; a class labelled in no pixel of the batch is left out.
    """
    logits = logits.float()
    target = target.float()
    unknown = target == UNKNOWN
    if bool(unknown.any()):
        known = ~unknown
        return _masked_bce_dice(logits, torch.where(known, target, 0.0), labelled, known, eps)
    bce = bce_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    pixels = bce[0, 0].numel()
    if bool(labelled.all()):  # the usual batch: no masking passes over the maps
        count = logits.new_full((logits.shape[1],), float(logits.shape[0] * pixels))
    else:
        weight = labelled.float()[:, :, None, None]
        bce, probs, target = bce * weight, probs * weight, target * weight
        count = weight.sum(dim=(0, 2, 3)) * pixels
    per_class_bce = bce.sum(dim=(0, 2, 3)) / count.clamp_min(1)
    inter = (probs * target).sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3)) + eps)
    present = labelled.any(dim=0)
    loss = per_class_bce + (1 - dice)
    return loss[present].mean() if present.any() else logits.sum() * 0


def _masked_bce_dice(
    logits: torch.Tensor,
    target: torch.Tensor,
    labelled: torch.Tensor,
    known: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """:func:`bce_dice` with a per-pixel weight: ``known`` (B, C, H, W) and ``labelled``."""
    weight = (known & labelled[:, :, None, None]).float()
    bce = bce_with_logits(logits, target) * weight
    probs = torch.sigmoid(logits) * weight
    target = target * weight
    count = weight.sum(dim=(0, 2, 3))
    per_class_bce = bce.sum(dim=(0, 2, 3)) / count.clamp_min(1)
    inter = (probs * target).sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3)) + eps)
    present = count > 0
    loss = per_class_bce + (1 - dice)
    return loss[present].mean() if present.any() else logits.sum() * 0


def labelled_pixels(target: torch.Tensor, labelled: torch.Tensor) -> bool:
    """True when some pixel of ``target`` (B, C, H, W) is known for a labelled class."""
    return bool(((target != UNKNOWN) & labelled[:, :, None, None]).any())
