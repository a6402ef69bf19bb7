"""The accuracy bar: test Dice on VNC after a fixed CPU training budget; prints JSON.

vit_tiny from scratch (no pretrained weights here), trained on slices 0-13 with slices
14-15 for validation (model selection only), evaluated on the held-out test slices 16-19
at full resolution. Memory variants see the four slices before the first test slice as
raw images only (the warm-up an inference block does), never their labels.

Variants, same seed and wall-clock budget each:
- ``full``: two-stage decoder, stage 1 then stage 2 (memory), split by ``--stage2-share``
- ``no_memory``: stage 1 only for the whole budget, predicted slice by slice
- ``single_stage``: one decoder, stage 1 then stage 2
- ``unet``: a plain 2D U-Net (benchmarks/unet_baseline.py) on the same tiles and loss

The step count of each run is calibrated from a short timing run so the cosine schedule
ends inside the budget; ``minutes`` is a hard stop as well.
Usage: .venv/bin/python benchmarks/accuracy.py [--minutes 20] [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sam4em.config import validate_config
from sam4em.io.importer import import_dataset
from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint
from sam4em.predict.stack_predictor import PredictSettings, StackPredictor
from sam4em.tiling.tiles import write_tiles
from sam4em.train.run_stage import run_stage
from sam4em.train.settings import stage_settings
from sam4em.train.tile_data import TileSet

sys.path.insert(0, str(Path(__file__).parent))
from unet_baseline import predict_unet, train_unet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST = (16, 20)
WARMUP = 4


def base_config(data: Path) -> dict[str, Any]:
    """The default config pointed at ``data`` (the VNC repository folder)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    ds = config["datasets"]["vnc"]
    ds["raw"] = str(data / "stack1" / "raw")
    ds["labels"]["source"] = str(data / "stack1" / "labels")
    config["train"]["save_every"] = 10**6
    return config


def _with(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_config(out, "benchmark config")


def _calibrated(config: dict[str, Any], stage: int, minutes: float, tiles, work: Path, init):
    """Config whose stage ``stage`` runs as many steps as fit in ``minutes`` (90%)."""
    probe_steps = 12
    probe = _with(config, **{f"train__stage{stage}__steps": probe_steps,
                             f"train__stage{stage}__val_every": 10**6,
                             f"train__stage{stage}__minutes": None})  # fmt: skip
    t0 = time.perf_counter()
    run_stage(
        probe, stage, [tiles["train"]], [], work / f"probe{stage}.pt", init, work / f"p{stage}"
    )
    per_step = (time.perf_counter() - t0) / probe_steps
    steps = max(20, int(minutes * 60 * 0.9 / per_step))
    return _with(config, **{f"train__stage{stage}__steps": steps,
                            f"train__stage{stage}__minutes": minutes,
                            f"train__stage{stage}__val_every": max(10, steps // 8),
                            f"train__stage{stage}__warmup_steps": max(5, steps // 20)})  # fmt: skip


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Hard Dice of two boolean arrays (1.0 when both are empty)."""
    total = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / total) if total else 1.0


def test_scores(probs: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-class Dice of probabilities (C, Z, Y, X) > 0.5 against the test labels."""
    return {c: round(dice(probs[i] > 0.5, labels[c]), 4) for i, c in enumerate(labels)}


def run_sam4em(
    variant: str, config, minutes: float, share: float, tiles, raw, labels, work: Path
) -> dict[str, Any]:
    """Train one SAM4EM variant within ``minutes`` and score it on the test slices."""
    work.mkdir(parents=True, exist_ok=True)
    two_stage = variant != "single_stage"
    memory = variant != "no_memory"
    config = _with(config, model__two_stage=two_stage)
    share = share if memory else 0.0
    t0 = time.perf_counter()
    c1 = _calibrated(config, 1, minutes * (1 - share), tiles, work, None)
    r1 = run_stage(c1, 1, [tiles["train"]], [tiles["val"]], work / "stage1.pt")
    final, steps = work / "stage1.pt", {"stage1": r1.step}
    train_s = r1.elapsed_s
    if memory:
        c2 = _calibrated(c1, 2, minutes * share, tiles, work, str(work / "stage1.pt"))
        r2 = run_stage(c2, 2, [tiles["train"]], [tiles["val"]], work / "stage2.pt", str(final))
        final, steps["stage2"], train_s = work / "stage2.pt", r2.step, train_s + r2.elapsed_s
    model, _ = load_checkpoint(final)
    predictor = StackPredictor(model, PredictSettings(memory=memory), torch.device("cpu"))
    start = TEST[0] - (WARMUP if memory else 0)
    probs = predictor.predict(raw[start : TEST[1]])[:, TEST[0] - start :]
    return {"test_dice": test_scores(probs, labels), "steps": steps,
            "train_minutes": round(train_s / 60, 2),
            "wall_minutes": round((time.perf_counter() - t0) / 60, 2)}  # fmt: skip


def run_unet(config, minutes, tiles, raw, labels) -> dict[str, Any]:
    """Train the U-Net yardstick within ``minutes`` and score it on the test slices."""
    s = stage_settings(_with(config, train__stage1__batch_size=8, train__stage1__lr=1e-3), 1)
    train = TileSet([tiles["train"]], sequences=False)
    val = TileSet([tiles["val"]], sequences=False)
    _, probe = train_unet(train, val, replace(s, steps=6, val_every=10**6), minutes)
    steps = max(20, int(minutes * 60 * 0.9 / (probe["seconds"] / 6)))
    s = replace(s, steps=steps, val_every=max(10, steps // 8), warmup_steps=max(5, steps // 20))
    model, info = train_unet(train, val, s, minutes)
    probs = predict_unet(model, raw[TEST[0] : TEST[1]])
    return {"test_dice": test_scores(probs, labels), "steps": info["steps"],
            "train_minutes": round(info["seconds"] / 60, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per variant")
    parser.add_argument("--stage2-share", type=float, default=0.2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/drosophila-vnc")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.accuracy")
    parser.add_argument("--variants", default="full,no_memory,single_stage,unet")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = validate_config(base_config(args.data), "benchmark config")
    args.work.mkdir(parents=True, exist_ok=True)
    volume = import_dataset(config, "vnc", args.work / "volume.zarr")
    tiles = {}
    for split in ("train", "val"):
        a, b = config["datasets"]["vnc"]["split"][split]
        tiles[split] = str(write_tiles(volume, split, range(a, b + 1), config["tiling"],
                                       args.work / f"{split}.zarr"))  # fmt: skip
    root = open_group(volume)
    raw = np.asarray(root["raw"])
    labels = {c: np.asarray(root[f"labels/{c}"][TEST[0] : TEST[1]]) > 0 for c in config["classes"]}
    results: dict[str, Any] = {}
    for variant in args.variants.split(","):
        logging.info("variant %s: %.1f minutes", variant, args.minutes)
        if variant == "unet":
            results[variant] = run_unet(config, args.minutes, tiles, raw, labels)
        else:
            results[variant] = run_sam4em(variant, config, args.minutes, args.stage2_share,
                                          tiles, raw, labels, args.work / variant)  # fmt: skip
        logging.info("variant %s: %s", variant, results[variant])
    mean = {k: round(float(np.mean(list(v["test_dice"].values()))), 4) for k, v in results.items()}
    report = {
        "test_dice": results.get("full", {}).get("test_dice"),
        "ablation": {k: v for k, v in mean.items() if k != "unet"},
        "unet": results.get("unet", {}).get("test_dice"),
        "train_minutes": results.get("full", {}).get("train_minutes"),
        "budget_minutes": args.minutes,
        "torch_threads": torch.get_num_threads(),
        "variants": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
