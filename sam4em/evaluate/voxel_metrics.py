"""Voxel overlap metrics of boolean masks.

Conventions for empty sets: when prediction and truth are both empty every metric is
1.0 (nothing to find, nothing claimed). Precision is 1.0 for an empty prediction (no
false positive) and recall is 1.0 for an empty truth (no miss); Dice and IoU are 0.0
when exactly one of the two is empty.
"""

from __future__ import annotations

import numpy as np


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """True positives, false positives and false negatives (voxel counts)."""
    pred, truth = pred.astype(bool, copy=False), truth.astype(bool, copy=False)
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp


def scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Dice, IoU, precision and recall from counts (see the module's conventions)."""
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


def voxel_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision, recall of two masks."""
    return scores(*overlap_counts(pred, truth))


def slice_consistency(mask: np.ndarray, breaks: frozenset[int] = frozenset()) -> float:
    """Mean Dice between neighbouring slices of a (Z, Y, X) mask: pairs ``(z - 1, z)``
    for ``z`` not in ``breaks`` (slices that follow a gap in z); 1.0 with no pair."""
    dices = pair_dices(mask, breaks)
    return float(np.mean(dices)) if dices else 1.0


def pair_dices(mask: np.ndarray, breaks: frozenset[int] = frozenset()) -> list[float]:
    """The Dice of each pair of neighbouring slices that :func:`slice_consistency` averages."""
    pairs = [z for z in range(1, len(mask)) if z not in breaks]
    return [voxel_scores(mask[z], mask[z - 1])["dice"] for z in pairs]
