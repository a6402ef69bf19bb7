"""Object-level metrics: one-to-one matching by IoU, splits, merges, detection.

Definitions:
- a predicted and a true object *match* at threshold t when their IoU >= t; matching
  is one-to-one, greedily by decreasing IoU (for t >= 0.5 this is the unique matching);
  F1 = 2 TP / (2 TP + FP + FN) with TP the matches, FP the unmatched predictions and FN
  the unmatched true objects; F1 is 1.0 when both sets are empty;
- a true object is *split* when two or more predicted objects each have at least half
  of their voxels inside it; a predicted object is a *merge* when two or more true
  objects each have at least half of their voxels inside it;
- *detection* (for small objects such as synapses): a predicted object is a hit when it
  overlaps any true object grown by ``tolerance`` voxels in y and x; a true object is
  found when any predicted object overlaps it (grown likewise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage


def contingency(pred: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
    """Overlapping (pred, true) id pairs with voxel counts, sizes and IoU."""
    both = (pred > 0) & (truth > 0)
    pairs, inter = (
        np.unique(
            np.stack([pred[both], truth[both]], axis=1).astype(np.int64), axis=0, return_counts=True
        )
        if both.any()
        else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    )
    pred_size = dict(zip(*np.unique(pred[pred > 0], return_counts=True), strict=True))
    true_size = dict(zip(*np.unique(truth[truth > 0], return_counts=True), strict=True))
    table = pd.DataFrame({"pred_id": pairs[:, 0], "true_id": pairs[:, 1], "overlap": inter})
    table["pred_voxels"] = [int(pred_size[i]) for i in table["pred_id"]]
    table["true_voxels"] = [int(true_size[i]) for i in table["true_id"]]
    table["iou"] = table["overlap"] / (
        table["pred_voxels"] + table["true_voxels"] - table["overlap"]
    )
    return table


def match(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One-to-one matches with IoU >= ``threshold``, greedily by decreasing IoU."""
    used_p: set[int] = set()
    used_t: set[int] = set()
    keep = []
    candidates = table[table["iou"] >= threshold].sort_values("iou", ascending=False)
    for index, p, t in zip(
        candidates.index, candidates["pred_id"], candidates["true_id"], strict=True
    ):
        if p in used_p or t in used_t:
            continue
        used_p.add(p)
        used_t.add(t)
        keep.append(index)
    return table.loc[keep]


def f1(matches: int, n_pred: int, n_true: int) -> float:
    """F1 of a matching (1.0 when there is nothing to find and nothing predicted)."""
    total = n_pred + n_true
    return 2 * matches / total if total else 1.0


def splits_and_merges(table: pd.DataFrame) -> tuple[int, int]:
    """(true objects split, predicted objects that merge), per the module's definitions."""
    mostly_in = table[table["overlap"] * 2 >= table["pred_voxels"]]
    splits = int((mostly_in.groupby("true_id").size() >= 2).sum())
    mostly_pred = table[table["overlap"] * 2 >= table["true_voxels"]]
    merges = int((mostly_pred.groupby("pred_id").size() >= 2).sum())
    return splits, merges


def _grow_xy(mask: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance <= 0:
        return mask
    structure = np.zeros((1, 3, 3), bool)
    structure[0] = True
    return ndimage.binary_dilation(mask, structure=structure, iterations=tolerance)


def detection(pred: np.ndarray, truth: np.ndarray, tolerance: int) -> dict[str, float]:
    """Detection precision, recall and F1 with an xy tolerance (see the module)."""
    ids_p = np.unique(pred[pred > 0])
    ids_t = np.unique(truth[truth > 0])
    hit_p = np.unique(pred[(pred > 0) & _grow_xy(truth > 0, tolerance)])
    found_t = np.unique(truth[(truth > 0) & _grow_xy(pred > 0, tolerance)])
    precision = len(hit_p) / len(ids_p) if len(ids_p) else 1.0
    recall = len(found_t) / len(ids_t) if len(ids_t) else 1.0
    both = precision + recall
    return {
        "detection_precision": precision,
        "detection_recall": recall,
        "detection_f1": 2 * precision * recall / both if both else 0.0,
    }
