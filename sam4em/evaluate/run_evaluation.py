"""The ``evaluate`` step: metrics of every class on the test slices of one dataset.

Writes ``metrics.csv`` (class, metric, value), ``metrics_per_slice.csv`` (class, z and
the voxel metrics) and ``objects_matched.csv`` (every overlapping predicted/true object
pair with its IoU and whether it is a match at IoU 0.5). Only the test slices are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import cc3d
import numpy as np
import pandas as pd
import zarr

from sam4em.data.z_index import breaks_in, volume_z_index
from sam4em.errors import InputDataError
from sam4em.evaluate.instance_metrics import contingency, detection, f1, match, splits_and_merges
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.evaluate.voxel_metrics import slice_consistency, voxel_scores
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import INSTANCES, PREDICTION, VOLUME, class_array, truth_array


def class_metrics(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    pred_ids: np.ndarray,
    connectivity: int,
    tolerance: int,
    breaks: frozenset[int] = frozenset(),
) -> tuple[dict[str, float], pd.DataFrame]:
    """Voxel, instance, detection and consistency metrics of one class, and the pairs;
    ``breaks``: the slices that follow a gap in z (no consistency across them)."""
    true_ids = cc3d.connected_components(truth_mask.astype(np.uint8), connectivity=connectivity)
    table = contingency(pred_ids, true_ids)
    n_pred = len(np.unique(pred_ids[pred_ids > 0]))
    n_true = len(np.unique(true_ids[true_ids > 0]))
    splits, merges = splits_and_merges(table)
    metrics: dict[str, float] = dict(voxel_scores(pred_mask, truth_mask))
    for t in (0.5, 0.75):
        metrics[f"f1_iou{int(t * 100)}"] = f1(len(match(table, t)), n_pred, n_true)
    metrics |= {
        "objects_predicted": n_pred,
        "objects_true": n_true,
        "splits": splits,
        "merges": merges,
        **detection(pred_ids, true_ids, tolerance),
        "consistency_predicted": slice_consistency(pred_mask, breaks),
        "consistency_true": slice_consistency(truth_mask, breaks),
    }
    matched = match(table, 0.5)
    keys = set(zip(matched["pred_id"], matched["true_id"], strict=True))
    table["match_iou50"] = [
        (p, t) in keys for p, t in zip(table["pred_id"], table["true_id"], strict=True)
    ]
    return metrics, table


def truth_and_mask(
    settings: EvaluationSettings, volume: zarr.Group, pred: zarr.Group, cls: str
) -> tuple[np.ndarray, np.ndarray]:
    """Annotation and predicted mask of ``cls`` on the test slices: probabilities cut at
    the class's level (:meth:`EvaluationSettings.level`, what every metric scores)."""
    z = settings.test
    truth = np.asarray(truth_array(volume, cls)[z.start : z.stop]) > 0
    level = settings.level(cls, pred.attrs.get("thresholds"))
    probs = class_array(pred, str(pred.store), cls)
    return truth, np.asarray(probs[z.start : z.stop]) >= level


def evaluate_dataset(
    settings: EvaluationSettings,
    name: str,
    volume: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    instances: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> pd.DataFrame:
    """Evaluate dataset ``name`` on its test slices; returns the metrics table."""
    z = settings.test
    vol, probs, inst = VOLUME.open(volume), PREDICTION.open(pred), INSTANCES.open(instances)
    labelled = vol.attrs["sam4em"]["labelled_classes"]
    z_index = volume_z_index(vol.attrs["sam4em"], vol["raw"].shape[0])
    breaks = breaks_in(z_index, z.start, z.stop)
    rows, per_slice, pairs = [], [], []
    for cls in settings.classes:
        if cls not in labelled:
            continue
        truth, mask = truth_and_mask(settings, vol, probs, cls)
        ids = np.asarray(class_array(inst, instances, cls)[z.start : z.stop])
        connectivity = settings.components[cls].connectivity
        metrics, table = class_metrics(
            mask, truth, ids, connectivity, settings.detection_tolerance, breaks
        )
        rows += [{"class": cls, "metric": k, "value": v} for k, v in metrics.items()]
        for k in range(len(truth)):
            per_slice.append({"class": cls, "z": z.start + k, **voxel_scores(mask[k], truth[k])})
        pairs.append(table.assign(**{"class": cls}))
    if not rows:
        raise InputDataError(f"datasets.{name}: no labelled class to evaluate")
    out = Path(out_dir)
    metrics_table = pd.DataFrame(rows)
    write_bytes_atomic(out / "metrics.csv", metrics_table.to_csv(index=False).encode())
    write_bytes_atomic(
        out / "metrics_per_slice.csv", pd.DataFrame(per_slice).to_csv(index=False).encode()
    )
    matched = pd.concat(pairs, ignore_index=True)
    write_bytes_atomic(out / "objects_matched.csv", matched.to_csv(index=False).encode())
    return metrics_table
