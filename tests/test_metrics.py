"""Metric functions on small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em.evaluate.instance_metrics import contingency, detection, f1, match, splits_and_merges
from sam4em.evaluate.voxel_metrics import slice_consistency, voxel_scores


def test_voxel_scores_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0], bool)
    truth = np.array([0, 1, 1, 1, 1, 0], bool)
    # tp 2, fp 1, fn 2
    s = voxel_scores(pred, truth)
    assert s["dice"] == pytest.approx(4 / 7)
    assert s["iou"] == pytest.approx(2 / 5)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 4)


def test_empty_conventions():
    empty, some = np.zeros(4, bool), np.array([1, 0, 0, 0], bool)
    assert voxel_scores(empty, empty) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    # nothing predicted: no false positive, everything missed
    assert voxel_scores(empty, some) == {"dice": 0.0, "iou": 0.0, "precision": 1.0, "recall": 0.0}
    # nothing to find: nothing missed, every prediction wrong
    assert voxel_scores(some, empty) == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 1.0}
    assert f1(0, 0, 0) == 1.0 and f1(0, 3, 0) == 0.0


def test_matching_splits_and_merges_by_hand():
    truth = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3, 3]])[None]
    pred = np.array([[5, 5, 6, 6, 0, 7, 7, 7, 7, 7]])[None]
    table = contingency(pred, truth)
    iou = {(r.pred_id, r.true_id): r.iou for r in table.itertuples()}
    # true 1 (4 voxels) is cut in two halves: IoU 2/4 each; pred 7 (5 voxels) covers 2 and 3
    assert iou == {(5, 1): 0.5, (6, 1): 0.5, (7, 2): 2 / 5, (7, 3): 2 / 5}
    assert len(match(table, 0.5)) == 1  # one-to-one: true 1 takes only one of 5 and 6
    assert len(match(table, 0.75)) == 0
    assert splits_and_merges(table) == (1, 1)
    assert f1(1, 3, 3) == pytest.approx(1 / 3)


def test_detection_tolerance():
    truth = np.zeros((1, 1, 12), int)
    truth[0, 0, 2] = 1
    truth[0, 0, 10] = 2
    pred = np.zeros_like(truth)
    pred[0, 0, 4] = 1  # two voxels from true object 1
    exact = detection(pred, truth, tolerance=0)
    assert exact["detection_precision"] == 0.0 and exact["detection_recall"] == 0.0
    near = detection(pred, truth, tolerance=2)
    assert near["detection_precision"] == 1.0 and near["detection_recall"] == 0.5
    assert near["detection_f1"] == pytest.approx(2 / 3)


def test_slice_consistency():
    m = np.zeros((3, 2, 2), bool)
    m[0, 0, 0] = m[1, 0, 0] = True  # same in slices 0 and 1, gone in 2
    assert slice_consistency(m) == pytest.approx((1.0 + 0.0) / 2)
    assert slice_consistency(m[:1]) == 1.0
