"""Slices that are not neighbours in z: a generated stack with gaps, cut from the real VNC
stack 1 and renumbered as sections with holes between them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from sam4em.blocks.plan import PlanSettings, write_plan
from sam4em.config import load_config
from sam4em.data.z_index import (
    breaks_in,
    check_z_index,
    describe_gaps,
    gaps,
    numbers_from_names,
    run_of,
    runs,
)
from sam4em.evaluate.voxel_metrics import slice_consistency
from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint, read_checkpoint
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import build_model
from sam4em.predict.block_job import predict_block
from sam4em.predict.settings import InferenceSettings, PredictSettings
from sam4em.predict.stack_predictor import StackPredictor
from sam4em.train.tile_data import TileSet
from tests.conftest import assert_user_error, run_cli, tiny_config

SECTIONS = [3, 4, 5, 6, 20, 21, 22, 40, 41, 42, 43, 60]  # runs of 4, 3, 4 and 1 slices


def test_the_z_index_helpers():
    assert numbers_from_names(["s3.tif", "s4.tif", "s20.tif"]) == [3, 4, 20]
    assert numbers_from_names(["a2_z7.png", "a2_z9.png"]) == [7, 9]  # the last digit run
    assert numbers_from_names(["a.tif", "b1.tif"]) is None  # a name without a number
    assert numbers_from_names(["s5.tif", "s5b.tif"]) is None  # not increasing
    assert gaps(SECTIONS) == [4, 7, 11]
    assert [list(r) for r in runs(SECTIONS)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10], [11]]
    assert run_of(SECTIONS, 5) == range(4, 7) and run_of(SECTIONS, 11) == range(11, 12)
    assert breaks_in(SECTIONS, 2, 9) == {2, 5}  # slices 4 and 7, relative to slice 2
    assert breaks_in(SECTIONS, 4, 7) == frozenset()  # a gap before the first slice is none
    assert describe_gaps(list(range(5))) == "no gaps in z"
    assert describe_gaps(SECTIONS).startswith("3 gaps in z (6->20, 22->40, 43->60)")
    assert "1 of them single slices" in describe_gaps(SECTIONS)
    with pytest.raises(ValueError, match="3 numbers for a volume of 4 slices"):
        check_z_index([0, 1, 2], 4, "datasets.x.z_index")
    with pytest.raises(ValueError, match="slice 2 has 1 after 5"):
        check_z_index([0, 5, 1], 3, "datasets.x.z_index")


def test_consistency_skips_pairs_across_a_gap():
    mask = np.zeros((4, 8, 8), bool)
    mask[:2, :4] = True  # slices 0, 1 agree; so do 2, 3; 1 -> 2 share nothing
    assert slice_consistency(mask) == pytest.approx(2 / 3)
    assert slice_consistency(mask, frozenset({2})) == 1.0
    assert slice_consistency(mask, frozenset({1, 2, 3})) == 1.0  # no pair left


@torch.no_grad()
def test_the_memory_is_cleared_across_a_gap_in_both_directions():
    torch.manual_seed(0)
    config = ModelConfig(classes=("a", "b"), preset="vit_tiny", img_size=64)
    model = build_model(config)
    stack = list(np.random.default_rng(0).integers(0, 255, (6, 64, 64), dtype=np.uint8))
    for both_ways in (False, True):
        settings = PredictSettings(memory=True, both_ways=both_ways)
        predictor = StackPredictor(model, settings, torch.device("cpu"))
        split = predictor.predict(stack, breaks=frozenset({3}))
        np.testing.assert_array_equal(split[:, :3], predictor.predict(stack[:3]))
        np.testing.assert_array_equal(split[:, 3:], predictor.predict(stack[3:]))
        joined = predictor.predict(stack)  # the memory carries over slice 3 when there's no gap
        # (a random-init memory's effect is small, but it is there)
        assert not np.array_equal(joined[:, 3], split[:, 3]), both_ways


def _gapped_stack(root, vnc, sections=SECTIONS):
    """The VNC crop's first len(sections) slices, raw files named by section number."""
    from sam4em.data.demo import write_crop

    data = write_crop(vnc / "stack1", root / "data", slice(0, len(sections)),
                      slice(704, 832), slice(256, 384))  # fmt: skip
    raws = sorted((data / "raw").glob("*.tif"))
    for path, section in zip(raws, sections, strict=True):
        path.rename(path.with_name(f"sec_{section:04d}.tif"))
    return data


def _config(root, data, split, **dataset):
    config = tiny_config({
        "raw": str(data / "raw"),
        "labels": {"source": str(data / "labels"),
                   "values": {"glia": 159, "mito": 191, "synapse": 223}},
        "voxel_size": [50, 4.6, 4.6], "split": split, **dataset,
    })  # fmt: skip
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _import(cfg, out):
    r = run_cli("import", "--config", str(cfg), "--dataset", "crop", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _tile(cfg, volume, split, out):
    r = run_cli("tile", "--config", str(cfg), "--dataset", "crop", "--split", split,
                "--volume", str(volume), "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_importer_reads_gaps_from_file_names_and_tiles_respect_them(tmp_path, vnc):
    data = _gapped_stack(tmp_path, vnc)
    # train: the runs 3-6 and 20-22; val: 40-42 (one val slice after the gap, 43)
    cfg = _config(tmp_path, data, {"train": [0, 6], "val": [9, 10], "test": [11, 11]})
    r = _import(cfg, tmp_path / "volume.zarr")
    assert "datasets.crop: the raw file names number the slices 3 ... 60 with 3 gaps" in r.stderr
    meta = open_group(tmp_path / "volume.zarr").attrs["sam4em"]
    assert meta["z_index"] == SECTIONS and meta["z_gaps"].startswith("3 gaps in z")
    _tile(cfg, tmp_path / "volume.zarr", "train", tmp_path / "train.zarr")
    _tile(cfg, tmp_path / "volume.zarr", "val", tmp_path / "val.zarr")
    for split in ("train", "val"):
        group = open_group(tmp_path / f"{split}.zarr")
        origin, seqs = np.asarray(group["origin"]), np.asarray(group["sequences"])
        assert group.attrs["sam4em"]["sequence_length"] == 3 and len(seqs)
        for row in seqs:
            z = origin[row, 0]
            assert [SECTIONS[k] for k in z] == list(range(SECTIONS[z[0]], SECTIONS[z[0]] + 3))
    train = open_group(tmp_path / "train.zarr")
    starts = sorted({int(np.asarray(train["origin"])[r[0], 0]) for r in train["sequences"][:]})
    assert starts == [0, 1, 4]  # 0-2, 1-3 and 4-6: none spans 3 -> 4 (6 -> 20)
    val = open_group(tmp_path / "val.zarr")
    assert val.attrs["sam4em"]["context_slices"] == 2  # slices 7, 8: the val run's own
    ends = {int(np.asarray(val["origin"])[r[-1], 0]) for r in val["sequences"][:]}
    assert ends == {9, 10}  # every val slice ends a window of its own run


def test_the_z_index_can_be_set_or_turned_off_and_is_checked(tmp_path, vnc):
    data = _gapped_stack(tmp_path, vnc)
    split = {"train": [0, 6], "val": [9, 10], "test": [11, 11]}
    cfg = _config(tmp_path, data, split, z_index="consecutive")
    _import(cfg, tmp_path / "a.zarr")
    assert open_group(tmp_path / "a.zarr").attrs["sam4em"]["z_index"] == list(range(12))
    listed = [0, 1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 30]
    cfg = _config(tmp_path, data, split, z_index=listed)
    _import(cfg, tmp_path / "b.zarr")
    assert open_group(tmp_path / "b.zarr").attrs["sam4em"]["z_index"] == listed
    cfg = _config(tmp_path, data, split, z_index=listed[:-1])
    r = run_cli("import", "--config", str(cfg), "--dataset", "crop", "--out", str(tmp_path / "c"))
    assert_user_error(r, "datasets.crop.z_index: 11 numbers for a volume of 12 slices")
    assert not (tmp_path / "c").exists()


def _imported_and_tiled(tmp_path, vnc, sections):
    """(data folder, config, volume) of an 8-slice gapped stack, train and val tiled."""
    data = _gapped_stack(tmp_path, vnc, sections)
    cfg = _config(tmp_path, data, {"train": [0, 3], "val": [4, 5], "test": [6, 7]})
    volume = tmp_path / "volume.zarr"
    _import(cfg, volume)
    for split in ("train", "val"):
        _tile(cfg, volume, split, tmp_path / f"{split}.zarr")
    return data, cfg, volume


@pytest.mark.slow  # trains a (tiny) model
def test_isolated_slices_train_and_predict_in_2d_with_a_notice(tmp_path, vnc):
    sections = [0, 10, 20, 30, 40, 50, 60, 70]  # no two slices are neighbours
    _, cfg, volume = _imported_and_tiled(tmp_path, vnc, sections)
    for split in ("train", "val"):
        assert len(TileSet([tmp_path / f"{split}.zarr"], sequences=True)) == 0
        assert len(TileSet([tmp_path / f"{split}.zarr"], sequences=False)) > 0
    models = tmp_path / "models"
    common = ["--config", str(cfg), "--train-tiles", str(tmp_path / "train.zarr"),
              "--val-tiles", str(tmp_path / "val.zarr")]  # fmt: skip
    r = run_cli("train", "--stage", "1", *common, "--out", str(models / "stage1.pt"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("train", "--stage", "2", *common, "--init", str(models / "stage1.pt"),
                "--out", str(models / "stage2.pt"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    notices = [line for line in r.stderr.splitlines() if "stage 2 skipped" in line]
    assert len(notices) == 1 and "no neighbours in z" in notices[0], r.stderr[-2000:]
    extra = read_checkpoint(models / "stage2.pt")["extra"]
    assert extra["memory"] is False and extra["choice"]["skipped"] is True
    assert extra["choice"]["model_stage"] == 1 and extra["stage"] == 1
    first, second = (
        load_checkpoint(models / "stage1.pt")[0],
        load_checkpoint(models / "stage2.pt")[0],
    )
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # the stage-1 weights, untouched
    assert (models / "stage2_history.csv").is_file() and (models / "stage2_curves.png").is_file()
    # a block job on it runs every slice alone: no memory, no warm-up across the gaps
    config, plan = load_config(cfg), tmp_path / "blocks.json"
    shape = open_group(volume)["raw"].shape
    block = write_plan(plan, shape, PlanSettings.from_config(config))[-1]
    done = tmp_path / "done.json"
    record = predict_block(InferenceSettings.from_config(config), models / "stage2.pt", volume,
                           plan, block.id, tmp_path / "pred.zarr", done)  # fmt: skip
    core = record["core"]
    assert record["memory"] is False and record["model_stage"] == 1
    assert record["slices_run"] == core["stop"][0] - core["start"][0]  # the core only
    assert record["z_breaks"] == list(range(core["start"][0] + 1, core["stop"][0]))


@pytest.mark.slow  # trains a (tiny) model
def test_a_block_job_clears_the_memory_at_a_gap_and_warms_up_in_its_own_run(tmp_path, vnc):
    sections = [0, 1, 2, 3, 9, 10, 11, 12]  # a gap between slices 3 and 4
    data, cfg, volume = _imported_and_tiled(tmp_path, vnc, sections)
    out = tmp_path / "stage1.pt"
    r = run_cli("train", "--stage", "1", "--config", str(cfg), "--train-tiles",
                str(tmp_path / "train.zarr"), "--val-tiles", str(tmp_path / "val.zarr"),
                "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # blocks of 4 slices and 1 warm-up slice: the core 4-7 follows the gap
    config, plan = load_config(cfg), tmp_path / "blocks.json"
    blocks = write_plan(plan, open_group(volume)["raw"].shape, PlanSettings.from_config(config))
    second = next(b for b in blocks if b.core.start[0] == 4)
    assert second.warmup == (3, 4)  # the plan's warm-up slice lies before the gap
    record = predict_block(InferenceSettings.from_config(config), out, volume, plan,
                           second.id, tmp_path / "pred.zarr", tmp_path / "done.json")  # fmt: skip
    assert record["memory"] is True
    assert record["slices_run"] == 4 and record["z_breaks"] == []  # warm-up dropped
    # the same block on the volume imported without the gaps warms up across slice 3
    shutil.rmtree(volume)
    cfg = _config(tmp_path, data, {"train": [0, 3], "val": [4, 5], "test": [6, 7]},
                  z_index="consecutive")  # fmt: skip
    _import(cfg, volume)
    record = predict_block(InferenceSettings.from_config(config), out, volume, plan,
                           second.id, tmp_path / "pred.zarr", tmp_path / "done.json")  # fmt: skip
    assert record["slices_run"] == 5 and record["z_breaks"] == []
