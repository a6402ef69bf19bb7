"""Forward time per 2D tile and per sequence slice, with parameter counts, and the
trainer's stage-1 steps per minute on the VNC tiles, the plain and the fast step path
side by side (``train_steps_per_minute``); prints JSON.

CPU always; CUDA too when available (bf16 autocast). vit_b is random-initialised here
(timing does not depend on the weights). The training section runs the demo config's
stage 1 (``train_stage``, data loading included) for ``--train-steps`` steps per path and
seed, and scores each run on val (Dice at 0.5) so the two paths' accuracy per step can
be compared too.
Usage: .venv/bin/python benchmarks/model_speed.py [--repeats N] [--batch B]
       [--train-steps N] [--train-seeds K] [--data VNC_FOLDER]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam4em.model.device import bf16_native
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import SAM4EM, build_model
from sam4em.train.settings import StageSettings, TrainSettings
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import StepPath, make_optimizer, optimise, train_stage

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import ROOT, Bench  # noqa: E402

CASES = [("vit_tiny", 256), ("vit_tiny", 512), ("vit_b", 512)]


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so a timer reads finished work."""
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def time_model(preset: str, size: int, device: str, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per tile for the 2D forward and per slice (of ``batch`` tiles) with memory."""
    model = build_model(ModelConfig(preset=preset, img_size=size)).eval().to(device)
    x = torch.rand((batch, 1, size, size), device=device) * 255
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    with autocast:
        model(x)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        sync(device)
        per_tile = (time.perf_counter() - t0) / (repeats * batch)
        bank = model.new_memory()
        for _ in range(model.config.memory.slots):  # fill the bank: the steady state
            model.step(x, bank)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.step(x, bank)
        sync(device)
        per_slice_tile = (time.perf_counter() - t0) / (repeats * batch)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "tile_2d": per_tile,
        "sequence_slice": per_slice_tile,
        "params_total": total,
        "params_trainable": trainable,
    }


def train_steps_per_s(
    model: SAM4EM,
    s: StageSettings,
    device: torch.device,
    repeats: int,
    bf16: bool | None = None,
    length: int = 1,
) -> float:
    """Stage ``s.stage`` optimisation steps per second of ``model`` (the trainer's own
    step, :func:`sam4em.train.trainer.optimise`) on random batches of ``s.batch_size``
    examples at the model's tile size (stage 2: z-sequences of ``length`` slices)."""
    model.to(device).train()
    optimizer = make_optimizer(model, s)
    size, n_cls = model.config.img_size, len(model.config.classes)
    shape = (s.batch_size, length)
    batch = (
        torch.rand((*shape, 1, size, size)) * 255,
        (torch.rand((*shape, n_cls, size, size)) > 0.9).float(),
        torch.ones((s.batch_size, n_cls), dtype=torch.bool),
    )
    optimise(model, optimizer, batch, s, device, bf16)  # warm-up
    sync(device.type)
    t0 = time.perf_counter()
    for _ in range(repeats):
        optimise(model, optimizer, batch, s, device, bf16)
    sync(device.type)
    return repeats / (time.perf_counter() - t0)


# (name, step path, train.bf16, tiles held in memory): the path before, the fast one, and
# the fast one in float32 (what bf16 adds, in speed and in val Dice per step)
PATHS = (
    ("plain", StepPath.plain(), False, False),
    ("fast", StepPath(), None, True),
    ("fast_fp32", StepPath(), False, True),
)


def train_steps_per_minute(data: Path, steps: int, seeds: int) -> dict[str, Any]:
    """Stage-1 steps per minute of ``train_stage`` on the VNC train tiles (demo config,
    scale and model), each path in :data:`PATHS` per seed, alternating, with the mean
    val Dice at 0.5 after ``steps`` steps."""
    bench = Bench(data, ROOT / "benchmarks/.model_speed")
    config = bench.config(None)
    tiles = bench.tiles(config["tiling"]["scale"])
    base = TrainSettings.from_config(config, 1)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in PATHS}
    for seed in range(seeds):
        for name, path, bf16, cache in PATHS:
            s = replace(base.stage, steps=steps, minutes=None, val_every=steps,
                        save_every=10**6, seed=base.stage.seed + seed, bf16=bf16)  # fmt: skip
            model = build_model(replace(base.model, seed=seed))
            train = TileSet([tiles["train"]], sequences=False, cache=cache)
            val = TileSet([tiles["val"]], sequences=False)
            with tempfile.TemporaryDirectory() as work:
                out = Path(work) / "stage1.pt"
                r = train_stage(model, s, train, val, out, Path(work) / "run", path=path)
            runs[name].append({"steps_per_minute": r.step / r.elapsed_s * 60,
                               "val_dice": r.best_score})  # fmt: skip
    out: dict[str, Any] = {"steps": steps, "seeds": seeds,
                           "bf16_native": bf16_native(torch.device("cpu"))}  # fmt: skip
    for name, rows in runs.items():
        for key in ("steps_per_minute", "val_dice"):
            values = [r[key] for r in rows]
            out[f"{name}_{key}"] = round(float(np.mean(values)), 4)
            out[f"{name}_{key}_std"] = round(float(np.std(values)), 4)
    for name in runs if "plain" in runs else []:
        ratio = out[f"{name}_steps_per_minute"] / out["plain_steps_per_minute"]
        out[f"{name}_speedup"] = round(ratio, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=60, help="0: no training section")
    parser.add_argument("--train-seeds", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/drosophila-vnc")
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    seconds: dict[str, dict[str, float]] = {}
    params: dict[str, dict[str, int]] = {}
    for device in devices:
        for preset, size in CASES:
            r = time_model(preset, size, device, args.batch, args.repeats)
            key = f"{device}/{preset}@{size}"
            seconds[key] = {
                "tile_2d": round(r["tile_2d"], 4),
                "sequence_slice": round(r["sequence_slice"], 4),
            }
            params[f"{preset}@{size}"] = {
                "total": r["params_total"],
                "trainable": r["params_trainable"],
            }
    print(
        json.dumps(
            {
                "seconds_per_tile": seconds,
                "params": params,
                "torch_threads": torch.get_num_threads(),
                "batch": args.batch,
                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "train_steps_per_minute": train_steps_per_minute(
                    args.data, args.train_steps, args.train_seeds
                )
                if args.train_steps
                else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
