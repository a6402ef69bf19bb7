"""The ``evaluate`` step: metrics of every class on the test crops of one dataset.

Writes ``metrics.csv`` (class, metric, value: pooled over the test crops),
``metrics_per_crop.csv`` (crop, class, metric, value), ``metrics_per_slice.csv`` (class,
crop, z and the voxel metrics) and ``objects_matched.csv`` (every overlapping
predicted/true object pair of a crop with its IoU and whether it is a match at IoU 0.5).
Only the test crops are read, and inside them only the voxels whose labels are known
(``volume.zarr/labelled``). A whole-slice test split is one crop of whole planes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cc3d
import numpy as np
import pandas as pd
import zarr

from sam4em.crops import Crop, of_role, volume_crops
from sam4em.data.z_index import breaks_in, volume_z_index
from sam4em.errors import InputDataError
from sam4em.evaluate.instance_metrics import contingency, detection, f1, match, splits_and_merges
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.evaluate.voxel_metrics import overlap_counts, pair_dices, scores, voxel_scores
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import (
    INSTANCES,
    LABELLED,
    PREDICTION,
    VOLUME,
    class_array,
    truth_array,
)


def class_counts(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    pred_ids: np.ndarray,
    connectivity: int,
    tolerance: int,
    breaks: frozenset[int] = frozenset(),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """What every metric of one class on one box is computed from (summed over boxes to
    pool them), and the overlapping object pairs; ``breaks``: the slices that follow a
    gap in z (no consistency across them)."""
    true_ids = cc3d.connected_components(truth_mask.astype(np.uint8), connectivity=connectivity)
    table = contingency(pred_ids, true_ids)
    n_pred = len(np.unique(pred_ids[pred_ids > 0]))
    n_true = len(np.unique(true_ids[true_ids > 0]))
    found = detection(pred_ids, true_ids, tolerance)
    counts: dict[str, Any] = dict(
        zip(("tp", "fp", "fn"), overlap_counts(pred_mask, truth_mask), strict=True)
    )
    counts |= {
        "matches_50": len(match(table, 0.5)),
        "matches_75": len(match(table, 0.75)),
        "objects_predicted": n_pred,
        "objects_true": n_true,
        **dict(zip(("splits", "merges"), splits_and_merges(table), strict=True)),
        "hit_predicted": round(found["detection_precision"] * n_pred),
        "found_true": round(found["detection_recall"] * n_true),
        "pairs_predicted": pair_dices(pred_mask, breaks),
        "pairs_true": pair_dices(truth_mask, breaks),
    }
    matched = match(table, 0.5)
    keys = set(zip(matched["pred_id"], matched["true_id"], strict=True))
    table["match_iou50"] = [
        (p, t) in keys for p, t in zip(table["pred_id"], table["true_id"], strict=True)
    ]
    return counts, table


def metrics_of(counts: list[dict[str, Any]]) -> dict[str, float]:
    """Voxel, instance, detection and consistency metrics of one class from the
    :func:`class_counts` of one or more boxes (pooled: counts summed, consistency over
    every pair of neighbouring slices)."""
    total = {k: sum((c[k] for c in counts), [] if k.startswith("pairs") else 0) for k in counts[0]}
    n_pred, n_true = total["objects_predicted"], total["objects_true"]
    precision = total["hit_predicted"] / n_pred if n_pred else 1.0
    recall = total["found_true"] / n_true if n_true else 1.0
    both = precision + recall
    metrics: dict[str, float] = dict(scores(total["tp"], total["fp"], total["fn"]))
    metrics |= {
        "f1_iou50": f1(total["matches_50"], n_pred, n_true),
        "f1_iou75": f1(total["matches_75"], n_pred, n_true),
        "objects_predicted": n_pred,
        "objects_true": n_true,
        "splits": total["splits"],
        "merges": total["merges"],
        "detection_precision": precision,
        "detection_recall": recall,
        "detection_f1": 2 * precision * recall / both if both else 0.0,
        "consistency_predicted": _mean_or_one(total["pairs_predicted"]),
        "consistency_true": _mean_or_one(total["pairs_true"]),
    }
    return metrics


def _mean_or_one(values: list[float]) -> float:
    return float(np.mean(values)) if values else 1.0


def scored_crops(volume: zarr.Group) -> list[Crop]:
    """The resolved test crops recorded in an opened ``volume.zarr``."""
    meta = volume.attrs["sam4em"]
    if "crops" not in meta:
        raise InputDataError(
            "volume.zarr: imported by an older sam4em without crops; delete it and run the "
            "workflow again"
        )
    return of_role(volume_crops(meta), "test")


def truth_and_mask(
    settings: EvaluationSettings, volume: zarr.Group, pred: zarr.Group, cls: str, crop: Crop
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Annotation, predicted mask and known voxels of ``cls`` in a test ``crop``:
    probabilities cut at the class's level (:meth:`EvaluationSettings.level`, what every
    metric scores); annotation and mask are False where the labels are unknown."""
    box = crop.slices
    known = np.asarray(volume[LABELLED][box]) > 0
    truth = (np.asarray(truth_array(volume, cls)[box]) > 0) & known
    level = settings.level(cls, pred.attrs.get("thresholds"))
    probs = class_array(pred, str(pred.store), cls)
    return truth, (np.asarray(probs[box]) >= level) & known, known


def evaluate_dataset(
    settings: EvaluationSettings,
    name: str,
    volume: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    instances: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> pd.DataFrame:
    """Evaluate dataset ``name`` on its test crops, each and pooled; returns the pooled
    metrics table."""
    vol, probs, inst = VOLUME.open(volume), PREDICTION.open(pred), INSTANCES.open(instances)
    labelled = vol.attrs["sam4em"]["labelled_classes"]
    z_index = volume_z_index(vol.attrs["sam4em"], vol["raw"].shape[0])
    crops = scored_crops(vol)
    rows, per_crop, per_slice, pairs = [], [], [], []
    for cls in settings.classes:
        if cls not in labelled:
            continue
        counts = []
        for crop in crops:
            truth, mask, known = truth_and_mask(settings, vol, probs, cls, crop)
            ids = np.asarray(class_array(inst, instances, cls)[crop.slices]) * known
            breaks = breaks_in(z_index, crop.z.start, crop.z.stop)
            c, table = class_counts(
                mask, truth, ids, settings.components[cls].connectivity,
                settings.detection_tolerance, breaks,
            )  # fmt: skip
            counts.append(c)
            per_crop += [
                {"crop": crop.name, "class": cls, "metric": k, "value": v}
                for k, v in metrics_of([c]).items()
            ]
            for k in range(len(truth)):
                per_slice.append({"class": cls, "crop": crop.name, "z": crop.z.start + k,
                                  **voxel_scores(mask[k], truth[k])})  # fmt: skip
            pairs.append(table.assign(**{"class": cls, "crop": crop.name}))
        rows += [{"class": cls, "metric": k, "value": v} for k, v in metrics_of(counts).items()]
    if not rows:
        raise InputDataError(f"datasets.{name}: no labelled class to evaluate")
    out = Path(out_dir)
    metrics_table = pd.DataFrame(rows)
    write_bytes_atomic(out / "metrics.csv", metrics_table.to_csv(index=False).encode())
    write_bytes_atomic(
        out / "metrics_per_crop.csv", pd.DataFrame(per_crop).to_csv(index=False).encode()
    )
    write_bytes_atomic(
        out / "metrics_per_slice.csv", pd.DataFrame(per_slice).to_csv(index=False).encode()
    )
    matched = pd.concat(pairs, ignore_index=True)
    write_bytes_atomic(out / "objects_matched.csv", matched.to_csv(index=False).encode())
    return metrics_table
