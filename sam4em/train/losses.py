"""Per-class BCE + soft Dice on both decoder stages; unlabelled classes are left out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice(
    logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor, eps: float = 1.0
) -> torch.Tensor:
    """Mean over labelled classes of BCE + (1 - soft Dice); Dice pools the whole batch.

    logits, target (B, C, H, W); labelled (B, C) bool: which classes each example labels.
    """
    logits = logits.float()
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
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
