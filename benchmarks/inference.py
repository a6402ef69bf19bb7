"""Inference cost on the demo volume: redundancy, overhead, memory, agreement; prints JSON.

- ``redundancy``: model tile forwards of the block-wise plan over those of one
  whole-volume block, on a 64 x 2048 x 2048 volume (the demo's slices tiled) with the
  default block shape (``inference.block_shape: null``); target <= 1.15. Counted from
  the plan (:func:`sam4em.blocks.plan.redundancy`); ``redundancy_demo_blocks`` is the
  same for the demo config's small blocks; ``demo_blocks_redundancy`` is the demo
  config's plan on the demo volume itself (what ``make demo`` runs)
- ``seconds_per_slice_megapixel``: end-to-end predict-block time over every block of the
  default plan of the demo volume, per slice-megapixel
- ``tta_seconds_per_slice_megapixel``: the same with ``inference.tta`` (the 8 views of
  each tile batch through the model together), and ``tta_ratio`` its time over the run
  without
- ``overhead_ratio``: that time over the bare model time of a whole-volume run
  (``model.step`` on its tile batches, data already in memory); target <= 1.15
- ``rss_ratio``: peak RSS of one block job on a volume 8x larger in xy (tiled copies)
  over one on the demo volume; target <= 1.2
- ``blockwise_dice_min``: lowest per-class Dice of the thresholded block-wise result
  (the demo config's small blocks) against a single whole-volume block
- on CUDA: 1024 x 1024 slices per second with vit_b at 512 px tiles in bf16

Usage: .venv/bin/python benchmarks/inference.py [--checkpoint models/stage2.pt] [--work DIR]
Without a checkpoint a vit_tiny model is trained briefly first (timing does not depend
on how well it is trained).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml

from sam4em.blocks.plan import PlanSettings, load_plan, load_settings, redundancy, write_plan
from sam4em.config import validate_config
from sam4em.data.importer import import_dataset
from sam4em.data.settings import ImportSettings
from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint
from sam4em.model.device import autocast, pick_device
from sam4em.model.lora import merge_lora
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import build_model
from sam4em.predict.block_job import block_window, predict_block
from sam4em.predict.settings import InferenceSettings
from sam4em.tiling.settings import TilingSettings
from sam4em.tiling.tiles import write_tiles
from sam4em.train.run_stage import run_stage
from sam4em.train.settings import TrainSettings

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import base_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _train_quick(config: dict, work: Path) -> Path:
    volume = work / "volume.zarr"
    tiles = [str(write_tiles(volume, s, TilingSettings.from_config(config), work / f"{s}.zarr"))
             for s in ("train", "val")]  # fmt: skip
    config = json.loads(json.dumps(config))
    config["train"]["stage1"].update(steps=40, val_every=40, minutes=None)
    config["train"]["stage2"].update(steps=8, val_every=8, minutes=None)
    stage1, stage2 = work / "stage1.pt", work / "stage2.pt"
    run_stage(TrainSettings.from_config(config, 1), tiles[:1], tiles[1:], stage1)
    run_stage(TrainSettings.from_config(config, 2), tiles[:1], tiles[1:], stage2, init=str(stage1))
    return work / "stage2.pt"


def run_all_blocks(config: dict, ckpt: Path, volume: Path, work: Path, block_shape) -> float:
    """Predict every block of a plan in this process (``work`` emptied first: a done
    marker left by an earlier run would skip its block); returns the seconds taken."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inference = config["inference"] | {"block_shape": block_shape}
    shape = open_group(volume)["raw"].shape
    write_plan(work / "blocks.json", shape,
               PlanSettings.from_config(config | {"inference": inference}))  # fmt: skip
    t0 = time.perf_counter()
    for b in load_plan(work / "blocks.json"):
        job = InferenceSettings.from_config(config | {"inference": inference})
        predict_block(job, ckpt, volume, work / "blocks.json", b.id, work / "pred.zarr",
                      work / "blocks" / f"{b.id}.done")  # fmt: skip
    return time.perf_counter() - t0


@torch.inference_mode()
def bare_model_seconds(config: dict, ckpt: Path, volume: Path, plan: Path) -> float:
    """``model.step`` alone on the same tile batches as the blocks of ``plan`` (bf16
    autocast on CUDA, as the block jobs)."""
    model, _ = load_checkpoint(ckpt)
    merge_lora(model.image_encoder.vit)
    device = pick_device(config["inference"]["device"])
    model.eval().to(device)
    raw = open_group(volume)["raw"]
    s, max_batch = model.config.img_size, config["inference"]["max_batch"]
    settings = load_settings(plan)
    total = 0.0
    for b in load_plan(plan):
        n_tiles = len(block_window(b, raw.shape, settings).origins)
        n_slices = b.core.stop[0] - b.warmup[0]
        tiles = torch.rand((n_tiles, 1, s, s), device=device) * 255
        batches = [tiles[i : i + max_batch] for i in range(0, n_tiles, max_batch)]
        banks = [model.new_memory() for _ in batches]
        t0 = time.perf_counter()
        with autocast(device):  # as the block jobs run it
            for _ in range(n_slices):
                for batch, bank in zip(batches, banks, strict=True):
                    model.step(batch, bank).final.float().sigmoid().cpu()
        total += time.perf_counter() - t0
    return total


def block_rss_mb(config_path: Path, ckpt: Path, volume: Path, work: Path) -> float:
    """Peak RSS (MB, VmHWM) of a child process that predicts the first block of ``volume``."""
    code = (
        "import sys\n"
        "from sam4em.config import load_config\n"
        "from sam4em.blocks.plan import PlanSettings, write_plan\n"
        "from sam4em.io.zarr_store import open_group\n"
        "from sam4em.predict.block_job import predict_block\n"
        "from sam4em.predict.settings import InferenceSettings\n"
        "cfg, ckpt, vol, work = sys.argv[1:]\n"
        "c = load_config(cfg)\n"
        "shape = open_group(vol)['raw'].shape\n"
        "b = write_plan(work + '/blocks.json', shape, PlanSettings.from_config(c))\n"
        "job = InferenceSettings.from_config(c)\n"
        "predict_block(job, ckpt, vol, work + '/blocks.json', b[0].id,\n"
        "              work + '/pred.zarr', work + '/b.done')\n"
        # VmHWM restarts at exec; ru_maxrss would carry the parent's peak over the fork
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024)\n"
    )
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", code, str(config_path), str(ckpt), str(volume),
                        str(work)], capture_output=True, text=True, check=True)  # fmt: skip
    return float(r.stdout.strip().splitlines()[-1])


def gpu_vit_b_slices_per_s() -> float | None:
    """1024 x 1024 slices per second, vit_b at 512 px tiles (2 x 2 + overlap), bf16."""
    if not torch.cuda.is_available():
        return None
    model = build_model(ModelConfig(preset="vit_b", img_size=512)).eval().cuda()
    tiles = torch.rand((9, 1, 512, 512), device="cuda") * 255  # 1024 px at stride 256
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        bank = model.new_memory()
        for _ in range(3):
            model.step(tiles, bank)
        torch.cuda.synchronize()
        t0, n = time.perf_counter(), 20
        for _ in range(n):
            model.step(tiles, bank)
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/drosophila-vnc")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.inference")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    config = validate_config(base_config(args.data), "benchmark config")
    config["inference"]["tta"] = False  # costs per model forward; TTA multiplies them by 8
    volume = import_dataset(ImportSettings.from_config(config, "vnc"), work / "volume.zarr")
    ckpt = args.checkpoint or _train_quick(config, work)
    shape = open_group(volume)["raw"].shape
    small = config["inference"]["block_shape"]
    default = PlanSettings.from_config(
        config | {"inference": config["inference"] | {"block_shape": None}}
    )
    lab = (64, 2 * shape[1], 2 * shape[2])
    costs = {
        "redundancy": round(redundancy(lab, default), 3),
        "redundancy_volume": list(lab),
        "default_block_shape": list(default.resolved(lab).block_shape),
        "redundancy_demo_blocks": round(redundancy(lab, PlanSettings.from_config(config)), 3),
        "demo_default_block_shape": list(default.resolved(shape).block_shape),
        "demo_blocks_redundancy": round(redundancy(shape, PlanSettings.from_config(config)), 3),
    }
    blocks_s = run_all_blocks(config, ckpt, volume, work / "blocks", small)
    default_s = run_all_blocks(config, ckpt, volume, work / "default", None)
    with_tta = config | {"inference": config["inference"] | {"tta": True}}
    tta_s = run_all_blocks(with_tta, ckpt, volume, work / "tta", None)
    whole_s = run_all_blocks(config, ckpt, volume, work / "whole", [shape[0], 1024, 1024])
    bare_s = bare_model_seconds(config, ckpt, volume, work / "whole" / "blocks.json")
    a, b = (open_group(work / n / "pred.zarr") for n in ("blocks", "whole"))
    dice = {}
    for c in config["classes"]:
        pa, pb = np.asarray(a[f"{c}/0"]) > 127, np.asarray(b[f"{c}/0"]) > 127
        total = pa.sum() + pb.sum()
        dice[c] = round(float(2 * (pa & pb).sum() / total) if total else 1.0, 5)
    # a volume 8x larger in xy (2 x 4 tiled copies of the demo slices)
    raw = np.asarray(open_group(volume)["raw"])
    tifffile.imwrite(work / "big.tif", np.tile(raw, (1, 2, 4)), photometric="minisblack")
    config["datasets"]["big"] = {"raw": str(work / "big.tif"), "voxel_size": [50, 4.6, 4.6]}
    config = validate_config(config, "benchmark config")
    big = import_dataset(ImportSettings.from_config(config, "big"), work / "big.zarr")
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    rss_small = block_rss_mb(cfg, ckpt, volume, work / "rss_small")
    rss_big = block_rss_mb(cfg, ckpt, big, work / "rss_big")
    megapixels = shape[0] * shape[1] * shape[2] / 1e6
    report = {
        "device": str(pick_device()),
        "torch_threads": torch.get_num_threads(),
        "volume_shape": list(shape),
        **costs,
        "blocks_demo_config": len(load_plan(work / "blocks" / "blocks.json")),
        "seconds_blockwise_demo_blocks": round(blocks_s, 2),
        "seconds_blockwise": round(default_s, 2),
        "seconds_whole_volume": round(whole_s, 2),
        "seconds_bare_model_whole_volume": round(bare_s, 2),
        "seconds_per_slice_megapixel": round(default_s / megapixels, 4),
        "tta_seconds_per_slice_megapixel": round(tta_s / megapixels, 4),
        "tta_ratio": round(tta_s / default_s, 3),
        "overhead_ratio": round(default_s / bare_s, 3),
        "overhead_ratio_demo_blocks": round(blocks_s / bare_s, 3),
        "blockwise_dice": dice,
        "blockwise_dice_min": min(dice.values()),
        "rss_block_mb": round(rss_small, 1),
        "rss_block_8x_xy_mb": round(rss_big, 1),
        "rss_ratio": round(rss_big / rss_small, 3),
        "gpu_vit_b_512_slices_per_s": gpu_vit_b_slices_per_s(),
        "peak_rss_this_process_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
