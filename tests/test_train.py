"""Dual-stage training on real VNC tiles with vit_tiny (a few steps each)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from sam4em.blocks.plan import PlanSettings, write_plan
from sam4em.config import load_config
from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint, read_checkpoint
from sam4em.model.memory_attention import MemoryAttention
from sam4em.predict.block_job import predict_block
from sam4em.predict.settings import InferenceSettings, PredictSettings
from sam4em.predict.stack_predictor import StackPredictor
from sam4em.train.augment import AugmentSettings, augment
from sam4em.train.feeder import BatchFeeder
from sam4em.train.run_stage import run_stage
from sam4em.train.sampler import BalancedSampler
from sam4em.train.settings import TrainSettings
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import THRESHOLD_LEVELS
from tests.conftest import assert_user_error, run_cli, vnc_dataset


@pytest.fixture(scope="module")
def vnc_tiles(tmp_path_factory, vnc):
    """Import the real stack and tile train, val and test (the test store must be refused)."""
    tmp = tmp_path_factory.mktemp("train")
    config = {
        "classes": ["glia", "mito", "synapse"],
        "datasets": {"vnc": vnc_dataset(vnc)},
        # the demo's model and tiles at half their size (tiles of 128 px at scale 0.25: the
        # same 9 tiles a slice, a quarter of the pixels), so each step costs a quarter
        "tiling": {"stride": 96, "scale": 0.25},
        "model": {"encoder_trainable": "all", "img_size": 128},
        "train": {
            "stage1": {"steps": 30, "val_every": 15, "warmup_steps": 5, "batch_size": 4},
            "stage2": {"steps": 6, "val_every": 3, "batch_size": 2, "lora_lr": 0.0},
            "save_every": 5,
            "log_every": 5,
            "stage2_min_gain": -1.0,  # keep stage 2 whatever it scores: these tests are on it
        },
    }
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    vol = tmp / "volume.zarr"
    assert (
        run_cli("import", "--config", str(cfg), "--dataset", "vnc", "--out", str(vol)).returncode
        == 0
    )
    tiles = {}
    for split in ("train", "val", "test"):
        tiles[split] = tmp / f"{split}.zarr"
        r = run_cli(
            "tile", "--config", str(cfg), "--dataset", "vnc", "--split", split,
            "--volume", str(vol), "--out", str(tiles[split]),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    return tmp, cfg, tiles


def _train(cfg, tiles, stage, out, *extra):
    args = [
        "train",
        "--config",
        str(cfg),
        "--stage",
        str(stage),
        "--train-tiles",
        str(tiles["train"]),
    ]
    return run_cli(*args, "--val-tiles", str(tiles["val"]), "--out", str(out), *extra)


@pytest.fixture(scope="module")
def stage1(vnc_tiles):
    tmp, cfg, tiles = vnc_tiles
    out = tmp / "run" / "models" / "stage1.pt"
    r = _train(cfg, tiles, 1, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow  # real training runs
def test_stage1_reduces_loss_and_writes_outputs(stage1):
    history = pd.read_csv(stage1.with_name("stage1_history.csv"))
    losses = history.dropna(subset=["loss"])["loss"].to_numpy()
    assert len(losses) == 6  # logged every 5 of 30 steps
    assert losses[-1] < losses[0] - 0.1
    assert history["step"].is_monotonic_increasing and history["step"].max() == 30
    assert {"val_dice_glia", "val_dice_mito", "val_dice_synapse", "val_dice_mean", "lr"} <= set(
        history
    )
    assert history.dropna(subset=["val_dice_mean"])["step"].tolist() == [15, 30]
    assert stage1.with_name("stage1_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    work = stage1.with_name("stage1")
    assert (work / "best.pt").is_file() and (work / "last.pt").is_file()
    meta = read_checkpoint(stage1)
    assert meta["extra"]["stage"] == 1 and meta["extra"]["step"] in (15, 30)


@pytest.mark.slow  # real training runs
def test_resume_after_kill_ends_where_an_uninterrupted_run_ends(vnc_tiles, stage1):
    tmp, cfg, tiles = vnc_tiles
    out = tmp / "killed" / "models" / "stage1.pt"
    last = out.with_name("stage1") / "last.pt"
    cmd = [sys.executable, "-m", "sam4em", "train", "--config", str(cfg), "--stage", "1",
           "--train-tiles", str(tiles["train"]), "--val-tiles", str(tiles["val"]),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=False)["step"] >= 10:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(last, weights_only=False)["step"]
    assert 10 <= killed_at < 30 and not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {last} at step {killed_at}" in r.stderr
    resumed = torch.load(last, weights_only=False)
    straight = torch.load(stage1.with_name("stage1") / "last.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == 30
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    a = pd.read_csv(out.with_name("stage1_history.csv"))
    b = pd.read_csv(stage1.with_name("stage1_history.csv"))
    pd.testing.assert_frame_equal(a.drop(columns="elapsed_s"), b.drop(columns="elapsed_s"))


@pytest.fixture(scope="module")
def stage2(vnc_tiles, stage1):
    """Stage 2 trained from ``stage1`` through the CLI (once for the tests that read it)."""
    tmp, cfg, tiles = vnc_tiles
    out = tmp / "run" / "models" / "stage2.pt"
    r = _train(cfg, tiles, 2, out, "--init", str(stage1))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow  # real training runs
def test_stage2_starts_from_stage1(stage1, stage2):
    out = stage2
    s1, s2 = read_checkpoint(stage1)["state_dict"], read_checkpoint(out)["state_dict"]
    assert set(s1) == set(s2)
    encoder = [k for k in s1 if k.startswith("image_encoder.")]
    assert encoder and all(torch.equal(s1[k], s2[k]) for k in encoder)  # lora_lr 0: frozen
    memory = [k for k in s1 if k.startswith("memory_")]
    assert any(not torch.equal(s1[k], s2[k]) for k in memory)  # the memory trained
    decoder = [k for k in s1 if k.startswith("decoder1.") and "running_" not in k
               and "num_batches" not in k]  # parameters, not BatchNorm statistics  # fmt: skip
    drift = max((s1[k] - s2[k]).abs().max().item() for k in decoder)
    assert 0 < drift < 0.05  # fine-tuned from stage 1, not from scratch
    history = pd.read_csv(out.with_name("stage2_history.csv"))
    assert history["step"].max() == 6
    extra = read_checkpoint(out)["extra"]
    assert extra["stage"] == 2 and extra["memory"] is True  # stage2_min_gain -1: kept
    assert extra["choice"]["model_stage"] == 2 and extra["choice"]["min_gain"] == -1.0


def test_stage2_without_init_is_an_error(vnc_tiles, tmp_path):
    _, cfg, tiles = vnc_tiles
    assert_user_error(_train(cfg, tiles, 2, tmp_path / "s2.pt"), "stage 2 needs --init")


def test_training_never_opens_test_tiles(vnc_tiles, tmp_path):
    _, cfg, tiles = vnc_tiles
    train, val = TileSet([tiles["train"]], False), TileSet([tiles["val"]], True)
    assert {z for _, z in train.slices} == set(range(14))
    assert {z for _, z in val.slices} == {14, 15}  # (raw context slices are not its own)
    assert train.splits == ["train"] and val.splits == ["val"]
    r = run_cli(
        "train", "--config", str(cfg), "--stage", "1", "--train-tiles", str(tiles["train"]),
        "--val-tiles", str(tiles["test"]), "--out", str(tmp_path / "m.pt"),
    )  # fmt: skip
    assert_user_error(r, "test tiles are never used for training")
    assert not (tmp_path / "m.pt").exists()


def test_sampler_draws_synapse_tiles_at_the_configured_rate(vnc_tiles):
    _, _, tiles = vnc_tiles
    data = TileSet([tiles["train"]], False)
    has_syn = data.presence[:, data.classes.index("synapse")] > 0
    natural = has_syn.mean()
    assert 0 < natural < 1
    for rate in (0.0, 0.3, 0.8):
        sampler = BalancedSampler(data.presence, data.classes, {"synapse": rate}, seed=1)
        drawn = sampler.draw(20000)
        share = has_syn[drawn].mean()
        assert share == pytest.approx(rate + (1 - rate) * natural, abs=0.015), rate


def test_sampler_state_round_trip():
    presence = np.random.default_rng(0).random((50, 3)) > 0.7
    a = BalancedSampler(presence.astype(float), ["a", "b", "c"], {"c": 0.5}, seed=3)
    a.draw(17)
    state = a.state()
    expected = a.draw(40)
    b = BalancedSampler(presence.astype(float), ["a", "b", "c"], {"c": 0.5}, seed=99)
    b.restore(state)
    np.testing.assert_array_equal(b.draw(40), expected)


def test_batches_prepared_ahead_are_the_batches_drawn_in_turn_and_resume_exactly(vnc_tiles):
    _, cfg, tiles = vnc_tiles
    s = TrainSettings.from_config(load_config(cfg), 2).stage  # sequences: z reversal too
    cached = TileSet([tiles["train"]], True)
    read = TileSet([tiles["train"]], True, cache=False)
    assert cached.cached and not read.cached
    for i in (0, len(read) // 2, len(read) - 1):
        for a, b in zip(cached[i], read[i], strict=True):
            np.testing.assert_array_equal(a, b)
    with BatchFeeder(data=read, s=s, ahead=False) as plain:
        expected = [plain.next() for _ in range(6)]
    with BatchFeeder(data=cached, s=s) as ahead:
        got = [ahead.next() for _ in range(3)]
        state = ahead.state()  # taken while batch 4 is being prepared
        got += [ahead.next() for _ in range(3)]
    with BatchFeeder(data=cached, s=s) as resumed:
        resumed.next()  # a batch drawn from the fresh state, then dropped by restore
        resumed.restore(state)
        again = [resumed.next() for _ in range(3)]
    for want, have in zip(expected, got, strict=True):
        for a, b in zip(want, have, strict=True):
            assert torch.equal(a, b)
    for want, have in zip(expected[3:], again, strict=True):
        for a, b in zip(want, have, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(expected[0][0], expected[1][0])  # the batches do differ


@pytest.mark.slow  # real training runs
def test_stage2_stores_val_thresholds_that_do_at_least_as_well_as_half(stage2):
    extra = read_checkpoint(stage2)["extra"]
    assert set(extra["thresholds"]) == {"glia", "mito", "synapse"}
    assert all(t in THRESHOLD_LEVELS for t in extra["thresholds"].values())
    for cls, at_half in extra["val_dice"].items():
        assert extra["val_dice_at_thresholds"][cls] >= at_half - 1e-9, cls


@pytest.mark.slow  # real training runs
def test_inference_uses_only_memory_distances_that_training_produced(vnc_tiles, stage1, tmp_path):
    _, cfg, tiles = vnc_tiles
    config = load_config(cfg)
    config["train"]["stage2"] |= {"steps": 2, "val_every": 100}
    seen: dict[str, set[int]] = {"train": set(), "inference": set()}
    phase = ["train"]

    def record(module, args):
        if isinstance(module, MemoryAttention):
            seen[phase[0]].add(len(args[2]))  # memories in the bank = farthest distance

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        run_stage(
            TrainSettings.from_config(config, 2),
            [str(tiles["train"])],
            [],
            tmp_path / "s2.pt",
            init=str(stage1),
        )
        phase[0] = "inference"
        model, _ = load_checkpoint(tmp_path / "s2.pt")
        warmup = config["inference"]["warmup"]
        stack = TileSet([tiles["train"]], sequences=False)[0][0]
        stack = np.repeat(stack, warmup + 6, axis=0)  # warm-up slices, then a block's core
        StackPredictor(model, PredictSettings(), torch.device("cpu")).predict(stack)
    finally:
        handle.remove()
    slots = config["model"]["memory"]["slots"]
    assert seen["inference"] == set(range(slots + 1))  # a full bank at inference
    assert seen["inference"] <= seen["train"], seen


@pytest.mark.slow  # real training runs
def test_minutes_budget_drives_the_schedule_to_its_end(vnc_tiles, tmp_path):
    _, cfg, tiles = vnc_tiles
    config = load_config(cfg)
    config["train"]["stage1"] |= {"steps": 10**6, "minutes": 0.2, "warmup_steps": 2}
    result = run_stage(
        TrainSettings.from_config(config, 1), [str(tiles["train"])], [], tmp_path / "s1.pt"
    )
    assert 0.2 * 60 <= result.elapsed_s < 0.2 * 60 + 10
    lrs = pd.DataFrame(result.history).dropna(subset=["lr"])["lr"].to_numpy()
    base = config["train"]["stage1"]["lr"]
    assert lrs[-1] < 0.15 * base  # the cosine reached its floor as the time ran out
    assert lrs.max() > 0.5 * base


def test_z_reversal_flips_sequences_only():
    rng = np.random.default_rng(0)
    images = np.arange(4)[:, None, None] * np.ones((4, 8, 8), np.float32)
    labels = np.zeros((4, 1, 8, 8), np.uint8)
    s = AugmentSettings(flip=False, rot90=False, intensity=0, elastic_p=0)
    orders = {tuple(augment(images, labels, s, rng)[0][:, 0, 0]) for _ in range(40)}
    assert orders == {(0, 1, 2, 3), (3, 2, 1, 0)}
    single = {float(augment(images[:1], labels[:1], s, rng)[0][0, 0, 0]) for _ in range(10)}
    assert single == {0.0}
    off = AugmentSettings(flip=False, rot90=False, intensity=0, elastic_p=0, z_reverse=False)
    assert {tuple(augment(images, labels, off, rng)[0][:, 0, 0]) for _ in range(20)} == {
        (0, 1, 2, 3)
    }


def test_memory_modules_learn_at_their_own_rate_in_stage_2_only(vnc_tiles):
    from sam4em.model.model_config import ModelConfig
    from sam4em.model.sam4em_model import build_model
    from sam4em.train.settings import StageSettings
    from sam4em.train.trainer import _param_groups

    config = load_config(vnc_tiles[1])
    config["train"]["stage2"]["memory_lr"] = 3e-3
    model = build_model(ModelConfig.from_config(config))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = _param_groups(model, StageSettings.from_config(config, 2))
    memory = [g for g in groups if all(names[id(p)].startswith("memory_") for p in g["params"])]
    assert len(memory) == 1 and memory[0]["lr"] == 3e-3
    others = [names[id(p)] for g in groups if g is not memory[0] for p in g["params"]]
    assert others and not any(n.startswith("memory_") for n in others)
    assert groups[0]["lr"] == config["train"]["stage2"]["lr"]
    # stage 1 trains no memory parameter; null memory_lr means the stage's lr
    groups = _param_groups(model, StageSettings.from_config(config, 1))
    assert not any(names[id(p)].startswith("memory_") for g in groups for p in g["params"])
    config["train"]["stage2"]["memory_lr"] = None
    assert StageSettings.from_config(config, 2).memory_lr == config["train"]["stage2"]["lr"]


def test_a_time_budget_shows_progress_over_its_time_not_the_step_cap(capsys):
    from sam4em.progress import StepProgress, set_quiet

    bar = StepProgress("stage 1", 20000, 0, budget_s=60.0, elapsed_s=0.0)
    bar.advance(30, 15.0, loss="0.500")
    bar.bar.refresh()
    bar.close()
    err = capsys.readouterr().err
    assert "15/60 s" in err and "step=30" in err and "steps/s=2.00" in err, err
    assert "20000" not in err  # a cap the budget ends long before
    steps = StepProgress("stage 2", 40, 0, budget_s=None, elapsed_s=0.0)
    steps.advance(10, 5.0)
    steps.close()
    assert "10/40" in capsys.readouterr().err
    set_quiet(True)
    try:
        quiet = StepProgress("stage 1", 20000, 0, budget_s=60.0, elapsed_s=0.0)
        quiet.advance(30, 15.0)
        quiet.close()
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow  # real training runs
def test_a_diverging_stage2_leaves_the_stage1_weights_with_the_memory_off(
    vnc_tiles, stage1, tmp_path
):
    """A stage-2 learning rate that blows the weights up: the stage-2 checkpoint then holds
    the stage-1 weights, says so and why, and the block jobs run it with the memory off.
    (With a gain of -1, keep stage 2 whatever it scores: test_stage2_starts_from_stage1.)"""
    tmp, cfg, tiles = vnc_tiles
    config = load_config(cfg)
    config["train"]["stage2"] |= {"steps": 4, "val_every": 4, "lr": 1e30, "memory_lr": 1e30,
                                  "lora_lr": 1e30}  # fmt: skip
    config["train"]["stage2_min_gain"] = 0.005
    out = tmp_path / "models" / "stage2.pt"
    run_stage(TrainSettings.from_config(config, 2), [str(tiles["train"])],
              [str(tiles["val"])], out, init=str(stage1))  # fmt: skip
    extra = read_checkpoint(out)["extra"]
    choice = extra["choice"]
    assert extra["memory"] is False and choice["model_stage"] == 1 and extra["stage"] == 1
    assert not choice["stage2_val_dice"] >= choice["stage1_val_dice"] + 0.005  # NaN or lower
    assert choice["stage1_val_dice"] > 0.05 and "does not beat" in choice["reason"]
    first, chosen = read_checkpoint(stage1)["state_dict"], read_checkpoint(out)["state_dict"]
    assert set(first) == set(chosen) and all(torch.equal(first[k], chosen[k]) for k in first)
    assert set(extra["thresholds"]) == {"glia", "mito", "synapse"}

    config["inference"]["block_shape"] = [4, 256, 256]
    plan = tmp_path / "blocks.json"
    volume = tmp / "volume.zarr"
    blocks = write_plan(plan, open_group(volume)["raw"].shape, PlanSettings.from_config(config))
    record = predict_block(InferenceSettings.from_config(config), out, volume, plan,
                           blocks[0].id, tmp_path / "pred.zarr", tmp_path / "b.done")  # fmt: skip
    assert record["memory"] is False and record["model_stage"] == 1
    assert record["model_choice"] == choice


def _masked_bce_dice(logits, target, labelled, eps=1.0):
    """The loss written out with a weight on every pixel (the definition)."""
    w = labelled.double()[:, :, None, None].expand_as(logits)
    p = torch.sigmoid(logits)
    bce = torch.clamp_min(logits, 0) - logits * target + torch.log1p(torch.exp(-logits.abs()))
    per_class = (bce * w).sum(dim=(0, 2, 3)) / w.sum(dim=(0, 2, 3)).clamp_min(1)
    inter = (p * target * w).sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / ((p * w).sum(dim=(0, 2, 3)) + (target * w).sum(dim=(0, 2, 3)) + eps)
    present = labelled.any(dim=0)
    return (per_class + 1 - dice)[present].mean()


def test_bce_with_logits_matches_torch_in_value_and_gradient_even_at_extreme_logits():
    from sam4em.train.losses import bce_with_logits

    g = torch.Generator().manual_seed(5)
    extremes = torch.tensor([-200.0, -90.0, -30.0, -1e-4, 0.0, 1e-4, 30.0, 90.0, 200.0])
    logits = torch.cat([torch.randn(4000, generator=g) * 6, extremes]).requires_grad_()
    target = (torch.rand(logits.shape, generator=g) > 0.5).float()
    x64 = logits.detach().double().requires_grad_()
    ref = F.binary_cross_entropy_with_logits(x64, target.double(), reduction="none")
    (ref_grad,) = torch.autograd.grad(ref.sum(), x64)
    ours = bce_with_logits(logits, target)
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    theirs = F.binary_cross_entropy_with_logits(logits.detach(), target, reduction="none")
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()

    def error(v: torch.Tensor) -> float:  # per pixel, relative to max(|BCE|, 1)
        return float(((v.detach().double() - ref).abs() / ref.abs().clamp_min(1)).max())

    # as close to float64 as PyTorch's own kernel is, and within a few float32 steps
    assert error(ours) <= max(error(theirs), 2**-22)
    assert float((grad.double() - ref_grad).abs().max()) < 1e-6
    assert torch.allclose(ours.detach(), theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("all_labelled", [True, False])
def test_loss_is_bce_plus_dice_over_the_labelled_classes(all_labelled):
    from sam4em.train.losses import bce_dice

    g = torch.Generator().manual_seed(3)
    logits = (torch.randn((3, 3, 16, 16), generator=g, dtype=torch.float64) * 4).requires_grad_()
    target = (torch.rand((3, 3, 16, 16), generator=g) > 0.7).double()
    labelled = torch.ones((3, 3), dtype=torch.bool)
    if not all_labelled:
        labelled[0, 1] = labelled[2, 0] = False
    loss = bce_dice(logits, target, labelled)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = _masked_bce_dice(logits, target, labelled)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    assert torch.allclose(loss.double(), expected, rtol=1e-5)
    assert torch.allclose(grad.double(), expected_grad, rtol=1e-4, atol=1e-9)
    if not all_labelled:  # an unlabelled class of an example is left out entirely
        assert float(grad[0, 1].abs().max()) == 0 and float(grad[2, 0].abs().max()) == 0


@pytest.mark.parametrize("case", ["within", "at_bound", "clipped", "nan"])
@pytest.mark.parametrize("foreach", [True, None])
def test_gradient_clipping_gives_pytorchs_gradients_to_the_bit(case, foreach):
    from sam4em.train.trainer import clip_gradients

    g = torch.Generator().manual_seed(7)
    shapes = [(64, 3, 3, 3), (64,), (10, 64), (10,)]
    grads = [torch.randn(s, generator=g) for s in shapes]
    norm = float(torch.linalg.vector_norm(torch.cat([x.flatten() for x in grads])))
    # at the bound PyTorch still scales by 1 / (1 + 1e-6); NaN: its clip spreads it to all
    scale = {"within": 0.01 / norm, "at_bound": 1.0 / norm, "clipped": 100.0, "nan": 1.0}
    grads = [x * scale[case] for x in grads]
    if case == "nan":
        grads[1][5] = float("nan")
    ours, theirs = ([torch.zeros(s, requires_grad=True) for s in shapes] for _ in range(2))
    for a, b, grad in zip(ours, theirs, grads, strict=True):
        a.grad, b.grad = grad.clone(), grad.clone()
    clip_gradients(ours, 1.0, foreach)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=foreach)
    for a, b, grad in zip(ours, theirs, grads, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)
        assert case != "nan" or a.grad.isnan().all()
        if case == "within":  # untouched
            assert torch.equal(a.grad, grad)
    if case == "clipped":  # to the bound
        norm = float(torch.linalg.vector_norm(torch.cat([a.grad.flatten() for a in ours])))
        assert abs(norm - 1.0) < 1e-4
