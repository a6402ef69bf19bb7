"""Block-wise inference and stitching on a real VNC crop with a trained vit_tiny model.

The crop is imported as an unlabelled dataset (raw only), so every test here also shows
that prediction needs no labels.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from sam4em.blocks.plan import PlanSettings, load_plan, write_plan
from sam4em.config import probability_level, validate_config
from sam4em.data.importer import import_dataset
from sam4em.data.settings import ImportSettings
from sam4em.errors import InputDataError
from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from sam4em.predict.block_job import predict_block
from sam4em.predict.pred_store import uncertainty_of
from sam4em.predict.settings import InferenceSettings, PredictSettings
from sam4em.predict.stack_predictor import StackPredictor
from sam4em.tiling.settings import TilingSettings
from sam4em.tiling.tiles import write_tiles
from sam4em.train.run_stage import run_stage
from sam4em.train.settings import TrainSettings
from tests.conftest import assert_user_error, run_cli, vnc_dataset

pytestmark = pytest.mark.slow  # trains a model, then runs block jobs

CLASSES = ["glia", "mito", "synapse"]
CROP = (slice(0, 12), slice(256, 704), slice(256, 704))  # 12 x 448 x 448
CHUNKS = [1, 128, 128]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vnc):
    """A briefly trained two-stage vit_tiny checkpoint and an unlabelled crop volume."""
    tmp = tmp_path_factory.mktemp("predict")
    config = validate_config(
        {
            "classes": CLASSES,
            "datasets": {"vnc": vnc_dataset(vnc)},
            "model": {"encoder_trainable": "all"},
            "train": {
                "stage1": {"steps": 40, "val_every": 40, "warmup_steps": 5, "batch_size": 4},
                "stage2": {"steps": 8, "val_every": 8, "warmup_steps": 2, "batch_size": 2},
            },
            "inference": {"chunks": CHUNKS},
        }
    )
    volume = import_dataset(ImportSettings.from_config(config, "vnc"), tmp / "volume.zarr")
    tiles = [
        str(write_tiles(volume, s, TilingSettings.from_config(config), tmp / f"{s}.zarr"))
        for s in ("train", "val")
    ]
    stage1, stage2 = tmp / "stage1.pt", tmp / "stage2.pt"
    run_stage(TrainSettings.from_config(config, 1), tiles[:1], tiles[1:], stage1)
    run_stage(TrainSettings.from_config(config, 2), tiles[:1], tiles[1:], stage2, init=str(stage1))
    raw = np.asarray(open_group(volume)["raw"][CROP])
    tifffile.imwrite(tmp / "crop.tif", raw, photometric="minisblack")
    config["datasets"]["crop"] = {"raw": str(tmp / "crop.tif"), "voxel_size": [50, 4.6, 4.6]}
    config = validate_config(config)
    crop = import_dataset(ImportSettings.from_config(config, "crop"), tmp / "crop.zarr")
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return config, cfg, tmp / "stage2.pt", crop, raw


def run_blocks(
    trained, work: Path, block_shape, warmup: int, scale: float = 1.0, ckpt=None, **inference
) -> np.ndarray:
    """Plan and predict every block in this process; (C, Z, Y, X) uint8 probabilities."""
    config, _, default_ckpt, crop, raw = trained
    ckpt = ckpt or default_ckpt
    settings = config["inference"] | inference | {"block_shape": block_shape, "warmup": warmup}
    write_plan(work / "blocks.json", raw.shape, plan_settings(config, scale, **settings))
    for b in load_plan(work / "blocks.json"):
        job = InferenceSettings.from_config(config | {"inference": settings})
        predict_block(job, ckpt, crop, work / "blocks.json", b.id, work / "pred.zarr",
                      work / "blocks" / f"{b.id}.done")  # fmt: skip
    return read_pred(work / "pred.zarr")


def plan_settings(config: dict, scale: float = 1.0, **inference) -> PlanSettings:
    """The block plan of ``config`` with some ``inference`` keys changed, at ``scale``."""
    changed = config | {"inference": config["inference"] | inference}
    return PlanSettings.from_config(changed | {"tiling": config["tiling"] | {"scale": scale}})


def read_pred(path: Path) -> np.ndarray:
    root = open_group(path)
    return np.stack([np.asarray(root[f"{c}/0"]) for c in CLASSES])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


@pytest.fixture(scope="module")
def whole_run(trained, tmp_path_factory):
    """The reference: one block holding the whole crop; (work folder, probabilities)."""
    work = tmp_path_factory.mktemp("whole")
    return work, run_blocks(trained, work, [12, 512, 512], 4)


@pytest.fixture(scope="module")
def whole(whole_run):
    return whole_run[1]


def test_blockwise_equals_whole_volume_and_needs_the_warmup(trained, whole, tmp_path):
    blocks = run_blocks(trained, tmp_path / "w4", [4, 256, 256], 4)
    cold = run_blocks(trained, tmp_path / "w0", [4, 256, 256], 0)
    assert len(load_plan(tmp_path / "w4" / "blocks.json")) == 12  # smaller in z, y and x
    assert whole.shape == (3, 12, 448, 448) and whole.max() > 127  # something is predicted
    for i, cls in enumerate(CLASSES):
        d = dice(blocks[i] > 127, whole[i] > 127)
        assert d >= 0.995, (cls, d)
    mad = np.abs(blocks.astype(int) - whole).mean()
    assert mad <= 2.0, mad
    # without warm-up, the first slice of each later z-block starts with an empty memory:
    # it differs from the whole-volume run, while the warmed-up blocks match it (the
    # memory's share of this briefly trained model is small next to the high-res path,
    # so the difference is small, but it is there and the warm-up removes it)
    firsts = [4, 8]
    warm = np.abs(blocks[:, firsts].astype(int) - whole[:, firsts]).mean()
    cold_mad = np.abs(cold[:, firsts].astype(int) - whole[:, firsts]).mean()
    assert cold_mad > 1e-3 and cold_mad > 100 * warm, (cold_mad, warm)


def test_uncertainty_is_the_entropy_of_the_probability_high_at_edges_and_off_the_em(
    trained, whole_run
):
    from scipy import ndimage

    _, _, ckpt, _, raw = trained
    work, whole = whole_run
    root = open_group(work / "pred.zarr")
    for i, cls in enumerate(CLASSES):
        stored = np.asarray(root[f"uncertainty/{cls}/0"])
        np.testing.assert_array_equal(stored, uncertainty_of(whole[i]))  # every voxel
        mask = whole[i] > 127
        inside = ndimage.binary_erosion(mask, iterations=2)
        edge = mask & ~ndimage.binary_erosion(mask, iterations=1)
        if inside.sum() > 100 and edge.sum() > 100:
            assert stored[edge].mean() > stored[inside].mean() + 20, cls  # of 255
    # the model never saw an input like this: uniform noise instead of EM
    model = load_checkpoint(ckpt)[0]
    predictor = StackPredictor(model, PredictSettings(memory=False), torch.device("cpu"))
    noise = np.random.default_rng(0).integers(0, 256, raw[:2, :256, :256].shape, np.uint8)
    em = predictor.predict(raw[:2, :256, :256])
    off = predictor.predict(noise)
    u = lambda p: uncertainty_of(np.rint(p * 255).astype(np.uint8)).mean()  # noqa: E731
    assert u(off) > u(em), (u(off), u(em))


def _edge_jumps(pred: np.ndarray, edges: list[int]) -> tuple[float, float]:
    """The measure: J(i) = mean |p(i) - p(i-1)| over a whole line i (columns and rows
    pooled, all slices and classes). Returns the largest J at a tile edge and the 99th
    percentile of J over the interior lines (edges +-1 left out)."""
    jumps = []
    for axis in (2, 3):
        diff = np.abs(np.diff(pred.astype(np.float32), axis=axis))
        per_line = diff.mean(axis=tuple(a for a in range(4) if a != axis))
        jumps.append(per_line)  # index i = jump between i and i + 1
    per_line = np.mean(jumps, axis=0)
    at_edges = [e - 1 for e in edges]
    interior = np.delete(per_line, [i + d for i in at_edges for d in (-1, 0, 1)])
    return float(per_line[at_edges].max()), float(np.percentile(interior, 99))


def test_blending_leaves_no_seams(trained, whole, tmp_path):
    # lattice over 448 px: tiles at 0 and 192 (size 256), so edges at 192 and 256
    edges = [192, 256]
    edge, interior = _edge_jumps(whole, edges)
    assert edge <= interior, (edge, interior)
    # the measure can fail: flat weights (plain averaging) switch tiles abruptly
    hard = run_blocks(trained, tmp_path, [12, 512, 512], 4, window="flat")
    hard_edge, hard_interior = _edge_jumps(hard, edges)
    assert hard_edge > edge and hard_edge > hard_interior, (hard_edge, hard_interior, edge)


def _cli_block(cfg: Path, ckpt: Path, crop: Path, work: Path, block: str):
    return [sys.executable, "-m", "sam4em", "predict-block", "--config", str(cfg),
            "--checkpoint", str(ckpt), "--volume", str(crop), "--plan",
            str(work / "blocks.json"), "--block", block,
            "--out", str(work / "pred.zarr")]  # fmt: skip


def test_killed_block_leaves_no_marker_and_rerun_matches(trained, whole, tmp_path):
    config, cfg, ckpt, crop, raw = trained
    settings = plan_settings(config, block_shape=[12, 512, 512], warmup=4)
    [block] = write_plan(tmp_path / "blocks.json", raw.shape, settings)
    marker = tmp_path / "blocks" / f"{block.id}.done"
    proc = subprocess.Popen(_cli_block(cfg, ckpt, crop, tmp_path, block.id),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    chunk_dir = tmp_path / "pred.zarr" / "glia" / "0" / "c"
    deadline = time.monotonic() + 300
    while not (chunk_dir.is_dir() and any(chunk_dir.rglob("*"))) and time.monotonic() < deadline:
        assert proc.poll() is None, "the block finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not marker.exists()  # partly written, not marked done
    partial = read_pred(tmp_path / "pred.zarr")
    assert (partial != whole).any()  # the kill did leave the block incomplete
    r = subprocess.run(_cli_block(cfg, ckpt, crop, tmp_path, block.id), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(marker.read_text())["block"] == block.id
    np.testing.assert_array_equal(read_pred(tmp_path / "pred.zarr"), whole)
    # a rerun of a done block is skipped
    r = subprocess.run(_cli_block(cfg, ckpt, crop, tmp_path, block.id), capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0 and "skipped" in r.stderr


def test_a_checkpoint_of_another_model_than_the_config_is_refused(trained, tmp_path):
    config, cfg, ckpt, crop, raw = trained
    settings = plan_settings(config, block_shape=[12, 512, 512], warmup=4)
    [block] = write_plan(tmp_path / "blocks.json", raw.shape, settings)
    other = yaml.safe_load(cfg.read_text())
    other["model"]["high_res_width"] = 16  # the config asks for another network
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    r = subprocess.run(_cli_block(tmp_path / "other.yaml", ckpt, crop, tmp_path, block.id),
                       capture_output=True, text=True)  # fmt: skip
    assert_user_error(r, str(ckpt), "high_res_width: checkpoint 32, expected 16")
    assert not (tmp_path / "blocks" / f"{block.id}.done").exists()


@pytest.fixture(scope="module")
def serial(trained, tmp_path_factory):
    """Four blocks of 12 x 384 x 384 (clipped) predicted one after another; its folder."""
    work = tmp_path_factory.mktemp("serial")
    return work, run_blocks(trained, work, [12, 384, 384], 4)


def test_parallel_block_jobs_equal_the_serial_run(trained, serial, tmp_path):
    config, cfg, ckpt, crop, raw = trained
    work = tmp_path / "parallel"
    settings = plan_settings(config, block_shape=[12, 384, 384], warmup=4)
    ids = [b.id for b in write_plan(work / "blocks.json", raw.shape, settings)]
    assert len(ids) == 4
    script = "; ".join(" ".join(_cli_block(cfg, ckpt, crop, work, b)) for b in ids[::2])
    script2 = "; ".join(" ".join(_cli_block(cfg, ckpt, crop, work, b)) for b in ids[1::2])
    procs = [subprocess.Popen(["bash", "-ec", s]) for s in (script, script2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    np.testing.assert_array_equal(read_pred(work / "pred.zarr"), serial[1])


def test_stitch_checks_blocks_and_writes_level_summary_figure(trained, serial):
    config, cfg, ckpt, crop, raw = trained
    tmp_path, pred = serial
    args = ["stitch", "--volume", str(crop), "--pred",
            str(tmp_path / "pred.zarr"), "--plan", str(tmp_path / "blocks.json"),
            "--summary", str(tmp_path / "predictions.json"),
            "--figure", str(tmp_path / "predictions.png")]  # fmt: skip
    first = sorted((tmp_path / "blocks").glob("*.done"))[0]
    first.rename(first.with_suffix(".moved"))
    assert_user_error(run_cli(*args), "1 block(s) not done", first.stem)
    first.with_suffix(".moved").rename(first)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "predictions.json").read_text())
    assert summary["blocks"] == 4 and summary["shape"] == [12, 448, 448]
    for i, cls in enumerate(CLASSES):
        group = open_group(tmp_path / "pred.zarr")[cls]
        # 448 px fit a screen (sam4em.io.pyramid.SCREEN): one level, described as such
        assert sorted(group.array_keys()) == ["0"]
        assert [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]] == ["0"]
        level = probability_level(config, cls, read_checkpoint(ckpt)["extra"]["thresholds"])
        frac = (pred[i] >= level).mean()
        stats = summary["classes_stats"][cls]
        assert stats["fraction_above_threshold"] == pytest.approx(frac, abs=1e-5)
    root = json.loads((tmp_path / "pred.zarr" / "zarr.json").read_text())
    assert "consolidated_metadata" in root  # consolidated for viewers
    made = root["attributes"]["complete"]  # the later stages read only a complete store
    assert made["blocks"] == 4 and made["model"] == json.loads(first.read_text())["model"]
    # a store that mixes models, or blocks of an earlier import, is refused
    record = json.loads(first.read_text())
    for key, fragment in (("model", "2 different models"), ("volume", "earlier import")):
        first.write_text(json.dumps({**record, key: "something else"}))
        assert_user_error(run_cli(*args), str(tmp_path / "pred.zarr"), fragment)
    first.write_text(json.dumps(record))
    png = (tmp_path / "predictions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_stitch_that_fails_late_leaves_the_store_unmarked(trained, serial, tmp_path):
    """The complete mark comes last: a stitch that cannot write its summary (here its
    folder is a file; a full disk is the same) leaves a store the later steps refuse."""
    import shutil

    from sam4em.predict.pred_store import mark_incomplete, require_complete

    _, _, _, crop, _ = trained
    work, _ = serial
    for name in ("pred.zarr", "blocks", "blocks.json"):
        copy = shutil.copytree if (work / name).is_dir() else shutil.copy
        copy(work / name, tmp_path / name)
    mark_incomplete(open_group(tmp_path / "pred.zarr", mode="r+"))
    (tmp_path / "full").write_text("not a folder")
    r = run_cli("stitch", "--volume", str(crop), "--pred", str(tmp_path / "pred.zarr"),
                "--plan", str(tmp_path / "blocks.json"),
                "--summary", str(tmp_path / "full" / "predictions.json"),
                "--figure", str(tmp_path / "predictions.png"))  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert (tmp_path / "predictions.png").is_file()  # it got as far as the figure
    with pytest.raises(InputDataError, match="prediction is incomplete"):
        require_complete(tmp_path / "pred.zarr")


def test_unknown_block_is_a_clear_error(trained, tmp_path):
    config, cfg, ckpt, crop, raw = trained
    write_plan(tmp_path / "blocks.json", raw.shape, plan_settings(config))
    r = run_cli("predict-block", "--config", str(cfg), "--checkpoint", str(ckpt), "--volume",
                str(crop), "--plan", str(tmp_path / "blocks.json"), "--block", "z9y9x9",
                "--out", str(tmp_path / "pred.zarr"))  # fmt: skip
    assert_user_error(r, "no block 'z9y9x9'", "planned blocks: z0y0x0")


def marked(trained, folder: Path, scale: float) -> Path:
    """The trained weights marked as trained at ``scale`` (for geometry tests)."""
    model, payload = load_checkpoint(trained[2])
    extra = payload["extra"] | {"scale": scale}
    return save_checkpoint(model, folder / f"scale-{scale:g}.pt", extra=extra)


@pytest.fixture(scope="module")
def half_scale(trained, tmp_path_factory):
    """The trained weights marked as trained at tiling.scale 0.5."""
    return marked(trained, tmp_path_factory.mktemp("half"), 0.5)


@pytest.mark.parametrize(("scale", "tiles"), [(0.5, 1), (0.75, 4)])
def test_blockwise_equals_whole_volume_at_other_scales(trained, tmp_path, scale, tiles):
    ckpt = marked(trained, tmp_path, scale)
    whole = run_blocks(trained, tmp_path / "whole", [12, 512, 512], 4, scale, ckpt)
    # 8 blocks: two runs of 6 slices in z (the second warmed up), 256 px cores that are
    # smaller than a tile at either scale
    blocks = run_blocks(trained, tmp_path / "blocks", [6, 256, 256], 4, scale, ckpt)
    assert whole.shape == (3, 12, 448, 448) and whole.max() > 127
    for i, cls in enumerate(CLASSES):
        assert dice(blocks[i] > 127, whole[i] > 127) >= 0.995, cls
    assert np.abs(blocks.astype(int) - whole).mean() <= 2.0
    # the model ran on the resampled grid: 448 px are 224 px at 0.5 (one 256 px tile)
    # and 336 px at 0.75 (2 x 2 tiles)
    plan = json.loads((tmp_path / "whole" / "blocks.json").read_text())
    assert plan["settings"]["scale"] == scale
    done = json.loads(next((tmp_path / "whole" / "blocks").glob("*.done")).read_text())
    assert done["tiles_per_slice"] == tiles


def test_scale_of_plan_and_model_must_agree(trained, half_scale, tmp_path):
    config, _, _, crop, raw = trained
    settings = plan_settings(config, block_shape=[12, 512, 512])
    [block] = write_plan(tmp_path / "blocks.json", raw.shape, settings)
    with pytest.raises(InputDataError, match="trained at tiling.scale 0.5"):
        predict_block(InferenceSettings.from_config(config), half_scale, crop,
                      tmp_path / "blocks.json", block.id, tmp_path / "pred.zarr",
                      tmp_path / "b.done")  # fmt: skip


def test_tta_averages_the_symmetries_of_the_square(trained):
    config, _, ckpt, _, raw = trained
    model, _ = load_checkpoint(ckpt)
    stack = raw[:3, :256, :256]  # one tile: the layout is symmetric too
    flipped = np.ascontiguousarray(stack[:, :, ::-1])
    gaps = {}
    for tta in (False, True):
        predictor = StackPredictor(model, PredictSettings(tta=tta), torch.device("cpu"))
        a = predictor.predict(stack)
        b = predictor.predict(flipped)[..., ::-1]
        gaps[tta] = float(np.abs(a - b).max())
    assert gaps[True] < 1e-4  # equivariant: each symmetry has its own memory
    assert gaps[False] > 1e-3  # the model alone is not


def test_pred_store_carries_the_val_thresholds(trained, tmp_path):
    config, _, ckpt, _, _ = trained
    chosen = read_checkpoint(ckpt)["extra"]["thresholds"]
    assert set(chosen) == set(CLASSES)
    store = open_group(whole_dir(tmp_path, trained) / "pred.zarr")
    assert dict(store.attrs["thresholds"]) == chosen
    for cls in CLASSES:
        level = probability_level(config, cls, store.attrs["thresholds"])  # config: unset
        assert level == int(np.ceil(chosen[cls] * 255))
        fixed = config | {"components": config["components"] | {"threshold": 0.7}}
        assert probability_level(fixed, cls, chosen) == int(np.ceil(0.7 * 255))


def whole_dir(tmp_path: Path, trained) -> Path:
    """A one-block run of the crop in ``tmp_path`` (its folder)."""
    run_blocks(trained, tmp_path, [12, 512, 512], 4)
    return tmp_path
