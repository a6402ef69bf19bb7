"""The GPU check: model speed, the pipeline's inference and a short training run, in one
command; prints one JSON.

Made for a short lease of one H100/H200 (about 7 minutes of work, nothing to fetch):
- ``model``: vit_b at 512 and 1024 px in bf16 autocast: tiles per second of the plain
  2D forward and of the memory step at the inference batch size, stage-1 optimisation
  steps per second with LoRA adapters (random init: no SAM weights travel), peak GPU
  memory of each;
- ``inference``: the block jobs of the pipeline on the demo volume (vit_b at 512 px,
  LoRA merged, TTA off and on): slices per second, and ``overhead_ratio``, the block
  jobs' time over the bare memory steps on the same tiles;
- ``training``: stage 1 + stage 2 of vit_tiny and of vit_b on the demo split within a
  few minutes each, scored on the test slices (Dice at the val-chosen thresholds): how
  the method scales with compute.

``--smoke`` runs the same code at tiny sizes on the CPU (a 20 x 128 x 128 crop, 64 px
vit_tiny, seconds of training) in under 3 minutes, with bf16 autocast on the CPU where
the full run uses it on CUDA; a test runs it. The JSON is also written to
``$OUT/device_check.json`` (or ``--out``) after every section, so a run cut short keeps
what it measured; a section that fails records its error, the others still run, and
the exit status is 1.

Usage (benchmarks/README.md has the device machine's one-line command):
    python3 benchmarks/device_check.py [--smoke] [--data DIR] [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import Bench, base_config, run_sam4em  # noqa: E402
from inference import bare_model_seconds, run_all_blocks  # noqa: E402
from model_speed import sync, train_steps_per_s  # noqa: E402

from sam4em.data.demo import write_crop  # noqa: E402
from sam4em.data.importer import import_dataset  # noqa: E402
from sam4em.data.settings import ImportSettings  # noqa: E402
from sam4em.io.zarr_store import open_group  # noqa: E402
from sam4em.model.checkpoint import save_checkpoint  # noqa: E402
from sam4em.model.device import autocast, pick_device  # noqa: E402
from sam4em.model.model_config import ModelConfig  # noqa: E402
from sam4em.model.sam4em_model import build_model  # noqa: E402
from sam4em.train.settings import StageSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "benchmarks" / ".device-bundle"
PACKAGES = ("torch", "torchvision", "peft", "zarr", "numcodecs", "segment-anything",
            "connected-components-3d", "numpy", "scikit-image")  # fmt: skip
log = logging.getLogger("device_check")


@dataclass(frozen=True)
class Run:
    """One training run of the ``training`` section."""

    preset: str
    img_size: int
    scale: float
    minutes: float  # both stages; stage 2 gets STAGE2_SHARE of it
    encoder_trainable: str = "all"  # random init: the whole encoder learns


@dataclass(frozen=True)
class Sizes:
    """What one mode measures."""

    model_cases: tuple[tuple[str, int], ...]
    repeats: int
    inference: tuple[str, int]  # preset, img_size (tiling.scale 1)
    runs: tuple[Run, ...]
    crop: tuple[slice, slice, slice] | None = None  # of stack 1; None: the whole stack
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted config keys
    bf16: bool | None = None  # None: where the device does it (CUDA)


STAGE2_SHARE = 0.3
FULL = Sizes(
    model_cases=(("vit_b", 512), ("vit_b", 1024)),
    repeats=5,
    inference=("vit_b", 512),
    runs=(Run("vit_tiny", 256, 0.5, 1.5), Run("vit_b", 512, 1.0, 2.5)),
)
SMOKE = Sizes(
    model_cases=(("vit_tiny", 64),),
    repeats=1,
    inference=("vit_tiny", 64),
    runs=(Run("vit_tiny", 64, 1.0, 0.1), Run("vit_tiny", 64, 0.5, 0.1)),
    crop=(slice(0, 20), slice(704, 832), slice(256, 384)),
    overrides={
        "storage.chunks": [4, 64, 64],
        "tiling.stride": 32,
        "tiling.sequence_length": 3,
        "model.memory.slots": 2,
        "inference.block_shape": [10, 128, 128],
        "inference.chunks": [1, 64, 64],
        "inference.tile_overlap": 16,
        "inference.warmup": 2,
    },
    bf16=True,
)


def _peak_gpu_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, the device and the host."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "packages": versions,
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16_supported": torch.cuda.is_bf16_supported() if device.type == "cuda" else None,
    }


@torch.inference_mode()
def _tiles_per_s(run: Callable[[], Any], n_tiles: int, repeats: int, device) -> float:
    run()  # warm-up (cuDNN picks its kernels here)
    sync(device.type)
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    sync(device.type)
    return n_tiles * repeats / (time.perf_counter() - t0)


def _forward_rates(model: Any, batch: int, sizes: Sizes, device: torch.device) -> dict:
    """Tiles per second of the 2D forward and of the memory step (a full bank)."""
    size = model.config.img_size
    x = torch.rand((batch, 1, size, size), device=device) * 255
    with autocast(device, sizes.bf16):
        forward = _tiles_per_s(lambda: model(x), batch, sizes.repeats, device)
        bank = model.new_memory()
        with torch.inference_mode():
            for _ in range(model.config.memory.slots):  # a full bank: the steady state
                model.step(x, bank)
        step = _tiles_per_s(lambda: model.step(x, bank), batch, sizes.repeats, device)
    return {"forward_2d_tiles_per_s": round(forward, 2), "memory_step_tiles_per_s": round(step, 2)}


def model_case(
    preset: str, size: int, config: dict[str, Any], sizes: Sizes, device: torch.device
) -> dict[str, Any]:
    """Forward and training rates of one model size, with its peak GPU memory."""
    model_config = ModelConfig.from_config(
        base_config_like(config, preset, size, encoder_trainable="lora")
    )
    model = build_model(model_config).eval().to(device)
    batch = config["inference"]["max_batch"]
    _reset_peak(device)
    out: dict[str, Any] = {"inference_batch": batch, **_forward_rates(model, batch, sizes, device)}
    out["forward_peak_gpu_mb"] = _peak_gpu_mb(device)
    s = StageSettings.from_config(config, 1)
    _reset_peak(device)
    steps = train_steps_per_s(model, s, device, sizes.repeats, sizes.bf16)
    out |= {
        "train_batch": s.batch_size,
        "stage1_lora_steps_per_s": round(steps, 3),
        "train_peak_gpu_mb": _peak_gpu_mb(device),
        "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "params_total": sum(p.numel() for p in model.parameters()),
    }
    return out


def base_config_like(
    config: dict[str, Any], preset: str, size: int, encoder_trainable: str
) -> dict[str, Any]:
    """``config`` with another model preset, tile size and trained encoder part."""
    model = config["model"] | {"preset": preset, "img_size": size,
                               "encoder_trainable": encoder_trainable}  # fmt: skip
    return config | {"model": model}


def inference(data: Path, work: Path, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """The pipeline's block jobs on the demo volume with a random-init LoRA model."""
    preset, size = sizes.inference
    overrides = sizes.overrides | {"model.preset": preset, "model.img_size": size,
                                   "model.encoder_trainable": "lora",
                                   "inference.tta": False}  # fmt: skip
    config = base_config(data, 1.0, overrides)
    volume = import_dataset(ImportSettings.from_config(config, "vnc"), work / "volume.zarr")
    model = build_model(ModelConfig.from_config(config))
    checkpoint = work / "random-lora.pt"
    thresholds = dict.fromkeys(config["classes"], 0.5)
    save_checkpoint(model, checkpoint, extra={"stage": 2, "scale": 1.0, "thresholds": thresholds})
    shape = tuple(open_group(volume)["raw"].shape)
    block_shape = config["inference"]["block_shape"]
    _reset_peak(device)
    cpu0 = time.process_time()
    seconds = run_all_blocks(config, checkpoint, volume, work / "blocks", block_shape)
    cpu1 = time.process_time()
    peak = _peak_gpu_mb(device)
    with_tta = config | {"inference": config["inference"] | {"tta": True}}
    tta_seconds = run_all_blocks(with_tta, checkpoint, volume, work / "tta", block_shape)
    cpu2 = time.process_time()
    bare = bare_model_seconds(config, checkpoint, volume, work / "blocks" / "blocks.json")
    return {
        "model": f"{preset}@{size}",
        "volume_shape": list(shape),
        "block_shape": block_shape,
        "seconds": round(seconds, 3),
        "slices_per_s": round(shape[0] / seconds, 3),
        "tta_seconds": round(tta_seconds, 3),
        "tta_slices_per_s": round(shape[0] / tta_seconds, 3),
        # this process's CPU time, which other jobs on a shared CPU do not inflate
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "tta_cpu_seconds": round(cpu2 - cpu1, 3),
        "bare_model_seconds": round(bare, 3),
        "overhead_ratio": round(seconds / bare, 3),
        "peak_gpu_mb": peak,
    }


def training(data: Path, work: Path, sizes: Sizes) -> dict[str, Any]:
    """Each run of ``sizes.runs``: both stages within its minutes, then test scores."""
    out = {}
    for run in sizes.runs:
        overrides = sizes.overrides | {
            "model.preset": run.preset,
            "model.img_size": run.img_size,
            "model.encoder_trainable": run.encoder_trainable,
        }
        bench = Bench(data, work / f"{run.preset}-{run.img_size}-{run.scale:g}", overrides)
        t0 = time.perf_counter()
        scores = run_sam4em("full", bench, run.scale, 0, run.minutes, STAGE2_SHARE, tta=False)
        key = f"{run.preset}@{run.img_size}/scale{run.scale:g}"
        out[key] = {
            "minutes_budget": run.minutes,
            "wall_s": round(time.perf_counter() - t0, 1),
            "encoder_trainable": run.encoder_trainable,
            "init": "random",
            **scores,
        }
        log.info("training %s: test Dice %s", key, scores["full"]["test_dice"])
    return out


def _data(args: argparse.Namespace, sizes: Sizes) -> Path:
    """The VNC folder to use: stack 1 whole, or its crop for the smoke run."""
    data = args.data
    if data is None:
        bundled = BUNDLE / "data" / "drosophila-vnc"
        data = bundled if bundled.is_dir() else ROOT.parent / "shared/data/drosophila-vnc"
    if not (data / "stack1" / "raw").is_dir():
        raise SystemExit(f"device_check: {data} has no stack1/raw (pass --data)")
    if sizes.crop is None:
        return data
    crop = args.work / "crop"
    if not (crop / "stack1" / "labels").is_dir():
        write_crop(data / "stack1", crop / "stack1", *sizes.crop)
    return crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--data", type=Path, help="the VNC folder (holds stack1/)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".device-check")
    parser.add_argument("--out", type=Path, help="JSON file (default: $OUT/device_check.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("sam4em").setLevel(logging.WARNING)
    sizes = SMOKE if args.smoke else FULL
    out = args.out or (Path(os.environ["OUT"]) / "device_check.json" if "OUT" in os.environ
                       else None)  # fmt: skip
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    device = pick_device("cpu" if args.smoke else "auto")
    data = _data(args, sizes)
    report: dict[str, Any] = {"mode": "smoke" if args.smoke else "full",
                              "date": time.strftime("%Y-%m-%d"), "errors": {}}  # fmt: skip
    t_start = time.perf_counter()
    config = base_config(data, 1.0, sizes.overrides)
    sections: dict[str, Callable[[], Any]] = {
        "environment": lambda: environment(device),
        "model": lambda: {
            f"{p}@{s}": model_case(p, s, config, sizes, device) for p, s in sizes.model_cases
        },  # fmt: skip
        "inference": lambda: inference(data, args.work / "inference", sizes, device),
        "training": lambda: training(data, args.work / "training", sizes),
    }
    for name, section in sections.items():
        t0 = time.perf_counter()
        log.info("%s ...", name)
        try:
            report[name] = section()
        except Exception as exc:  # noqa: BLE001 - recorded; the other sections still run
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            log.error("%s failed:\n%s", name, traceback.format_exc())
        report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        report["total_seconds"] = round(time.perf_counter() - t_start, 1)
        report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
        log.info("%s done in %.1f s", name, report["section_seconds"][name])
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["errors"] else 0)


if __name__ == "__main__":
    main()
