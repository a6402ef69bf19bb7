"""Evaluation and report on a small synthetic dataset whose answers are known."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from sam4em.analysis.settings import AnalysisSettings
from sam4em.config import validate_config
from sam4em.crops import dataset_crops
from sam4em.data.importer import import_dataset
from sam4em.data.settings import ImportSettings
from sam4em.evaluate.run_evaluation import evaluate_dataset
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.postprocess.instances import components_for_class
from sam4em.postprocess.settings import ComponentSettings
from sam4em.predict.pred_store import ensure_pred_store, store_identity
from sam4em.report.annotate_next import annotate_next
from sam4em.report.html_report import build_report
from sam4em.report.viewer import write_layers
from sam4em.train.history import write_curves, write_history
from tests.conftest import SELF_CONTAINED, assert_user_error, run_cli


def _dataset(tmp_path, pred_of):
    """Raw + labels on disk, a prediction store made by ``pred_of(truth)``, instances."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (8, 64, 64), dtype=np.uint8)
    truth = np.zeros(raw.shape, np.uint8)
    truth[:, 10:20, 10:20] = 1  # a column through every slice
    truth[5:7, 40:44, 40:44] = 1  # a small object in the test slices
    tifffile.imwrite(tmp_path / "raw.tif", raw, photometric="minisblack")
    tifffile.imwrite(tmp_path / "mito.tif", truth, photometric="minisblack")
    config = validate_config({
        "classes": ["mito"],
        "datasets": {"d": {
            "raw": str(tmp_path / "raw.tif"),
            "labels": {"masks": {"mito": str(tmp_path / "mito.tif")}},
            "voxel_size": [40, 8, 8],
            "split": {"train": [0, 3], "val": [4, 4], "test": [5, 7]},
        }},
        "inference": {"block_shape": [4, 32, 32], "chunks": [1, 32, 32]},
        "components": {"min_volume_nm3": 0},  # the small object (8e4 nm^3) is scored
        "analysis": {"annotate_region_px": 32, "annotate_box": [4, 32, 32]},
    })  # fmt: skip
    res = tmp_path / "results" / "d"
    import_dataset(ImportSettings.from_config(config, "d"), res / "volume.zarr")
    store = ensure_pred_store(
        res / "pred.zarr", store_identity(raw.shape, [1, 32, 32], ["mito"]), [40, 8, 8]
    )
    store["mito/0"][...] = pred_of(truth)
    table = components_for_class(
        ComponentSettings.from_config(config, "mito"),
        res / "pred.zarr",
        "mito",
        res / "instances.zarr",
        res / "objects" / "mito.csv",
    )
    return config, res, truth, table


def _evaluate(config, res):
    settings = EvaluationSettings.from_config(config, "d")
    parts = ("volume.zarr", "pred.zarr", "instances.zarr", "eval")
    return evaluate_dataset(settings, "d", *(res / p for p in parts))


def test_perfect_prediction_scores_one(tmp_path):
    config, res, truth, table = _dataset(tmp_path, lambda t: t * 255)
    assert len(table) == 2
    metrics = _evaluate(config, res)
    value = dict(zip(metrics["metric"], metrics["value"], strict=True))
    for key in ("dice", "iou", "precision", "recall", "f1_iou50", "f1_iou75", "detection_f1"):
        assert value[key] == 1.0, key
    assert value["objects_true"] == value["objects_predicted"] == 2
    per_slice = pd.read_csv(res / "eval" / "metrics_per_slice.csv")
    assert list(per_slice["z"]) == [5, 6, 7]  # the test slices only


def test_a_shifted_prediction_scores_as_computed_by_hand(tmp_path):
    def shifted(t):
        p = np.zeros_like(t)
        p[:, 10:20, 15:25] = 255  # the column moved 5 px in x; the small object missed
        return p

    config, res, truth, _ = _dataset(tmp_path, shifted)
    metrics = _evaluate(config, res)
    value = dict(zip(metrics["metric"], metrics["value"], strict=True))
    # test slices 5-7: truth 300 + 32 voxels, prediction 300, overlap 150
    assert value["dice"] == 2 * 150 / (332 + 300)
    assert value["precision"] == 0.5 and value["recall"] == 150 / 332
    # column IoU = 150 / 450 < 0.5: no object matches; one of two true objects detected
    assert value["f1_iou50"] == 0.0
    assert value["detection_recall"] == 0.5 and value["detection_precision"] == 1.0


def test_report_page_has_tables_and_embedded_figures(tmp_path):
    config, res, truth, _ = _dataset(tmp_path, lambda t: t * 255)
    _evaluate(config, res)
    (res / "predictions.json").write_text('{"shape": [8, 64, 64], "block_seconds": 12.0}')
    history = [{"step": 10, "loss": 1.0, "elapsed_s": 30.0, "val_dice_mito": 0.5}]
    write_history(history, res / "models" / "stage1_history.csv")
    write_curves(history, res / "models" / "stage1_curves.png", "stage 1")
    settings = EvaluationSettings.from_config(config, "d")
    analysis = AnalysisSettings.from_config(config)  # one class: no cross-class pairs
    layers = write_layers(res / "volume.zarr", res / "pred.zarr", res / "instances.zarr",
                          res / "layers.json")  # fmt: skip
    crops = dataset_crops(config["datasets"]["d"], "d")
    annotate_next(analysis, res / "pred.zarr", res / "instances.zarr", layers, crops,
                  res / "annotate_next.csv")  # fmt: skip
    out = build_report(settings, "d", res, res / "report.html", res / "figures" / "report",
                       "classes: [mito]\n", analysis)  # fmt: skip
    page = out.read_text()
    assert '<table id="metrics">' in page and "Dice (voxel overlap" in page
    assert page.count("data:image/png;base64,") == 4  # per-slice, curves, overlay, sizes
    assert "stage 1 training: 0.5 min" in page
    assert "classes: [mito]" in page  # the configuration the run used
    assert '<table id="objects">' in page and "Between classes" not in page
    # candidate crops of 4 x 32 x 32 in 8 x 64 x 64: 2 x 2 x 2, each with its link
    assert page.count('<a href="https://neuroglancer') == 8 and "8 kept rows" in page
    assert not re.search(SELF_CONTAINED, page)  # nothing fetched (links are not fetched)


def test_evaluate_without_a_test_split_is_a_clear_error(tmp_path):
    config, res, truth, _ = _dataset(tmp_path, lambda t: t * 255)
    del config["datasets"]["d"]["split"]["test"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    r = run_cli("evaluate", "--config", str(cfg), "--dataset", "d", "--volume",
                str(res / "volume.zarr"), "--pred", str(res / "pred.zarr"), "--instances",
                str(res / "instances.zarr"), "--out-dir", str(res / "eval"))  # fmt: skip
    assert_user_error(r, "datasets.d", "no test split")


def test_error_map_colours_each_kind_and_zooms_on_small_objects(tmp_path):
    from sam4em.report import figures

    raw = np.full((200, 200), 100, np.uint8)
    truth = np.zeros(raw.shape, bool)
    pred = np.zeros(raw.shape, bool)
    truth[10:14, 10:14] = pred[12:16, 12:16] = True  # overlap at 12:14
    rgb = figures.error_rgb(raw, truth, pred)
    colours = list(figures.ERROR_COLOURS.values())
    grey = 100 / 255
    for (y, x), colour in zip([(12, 12), (15, 15), (10, 10)], colours, strict=True):
        assert rgb[y, x] == pytest.approx([0.45 * grey + 0.55 * c for c in colour], abs=1e-6)
    assert rgb[100, 100] == pytest.approx([grey] * 3)  # background untouched
    assert figures.small_objects(truth) and not figures.small_objects(np.ones_like(truth))
    truth[150:154, 150:154] = True  # missed entirely: 16 wrong pixels, fewer than the 24
    assert figures.zoom_boxes(truth, pred, 32) == [(0, 0), (136, 136)]  # of the first
    u = np.zeros(raw.shape, np.uint8)
    out = figures.error_maps(raw, truth, pred, u, 3, "synapse", tmp_path / "e.png")
    from PIL import Image

    assert Image.open(out).size[1] > 600  # two rows: the overview and the zoomed crops
