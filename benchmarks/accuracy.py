"""The accuracy bar: test Dice on VNC after a fixed wall-clock training budget; prints JSON.

vit_tiny from scratch (no pretrained weights here), trained on slices 0-13 with slices
14-15 for validation (model selection, per-class thresholds and the sweep only),
evaluated on the held-out test slices 16-19 at full resolution. Memory models and the
2.5D U-Net see the slices before the first test slice as raw images only (the warm-up an
inference block does), never their labels.

Variants (the same wall-clock budget, validation included, and the same seeds each):
- ``full``: two-stage decoder + high-res path, stage 1 then stage 2 (memory)
- ``no_memory_same_weights``: the ``full`` stage-2 weights run with the memory off
- ``single_stage``: one decoder, stage 1 then stage 2
- ``no_high_res``: ``full`` without the high-resolution path
- ``unet``: a plain 2D U-Net (``unet_baseline.py``), its settings swept on val
- ``unet25d``: the U-Net with the two slices before as extra input channels

Per variant and seed: per-class test Dice, slice-to-slice consistency (and the ground
truth's), mito instance F1 at IoU 0.5, train minutes. ``--out FILE`` merges into FILE,
so variants can run in separate invocations; the summary is made from all runs there.

Usage: .venv/bin/python benchmarks/accuracy.py --minutes 10 --seeds 2 [--variants ...]
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

import cc3d
import numpy as np
import torch
import yaml

from sam4em.config import validate_config
from sam4em.data.importer import import_dataset
from sam4em.data.settings import ImportSettings
from sam4em.evaluate.run_evaluation import class_counts, metrics_of
from sam4em.io.zarr_store import open_group, truth_array
from sam4em.model.checkpoint import load_checkpoint, uses_memory
from sam4em.model.device import pick_device
from sam4em.predict.settings import PredictSettings
from sam4em.predict.stack_predictor import StackPredictor
from sam4em.tiling.settings import TilingSettings
from sam4em.tiling.tiles import write_tiles
from sam4em.train.run_stage import run_stage
from sam4em.train.settings import StageSettings, TrainSettings
from sam4em.train.stage_choice import slice_by_slice_table
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import THRESHOLD_LEVELS, choose_thresholds

sys.path.insert(0, str(Path(__file__).parent))
from unet_baseline import UNetSettings, predict_unet, train_unet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST = (16, 20)
WARMUP = 4
SAM_VARIANTS = ("full", "single_stage", "no_high_res")
VARIANTS = (*SAM_VARIANTS, "no_memory_same_weights", "unet", "unet25d")
# the U-Net sweep, coordinate-wise from (scale 0.5, width 16 (~0.5 M parameters),
# lr 1e-3): one step along each of scale, width and learning rate; chosen on val
UNET_SWEEP = (  # around the choice of the passes in benchmarks/RESULTS.md
    (0.5, UNetSettings(width=16, lr=3e-3)),
    (0.5, UNetSettings(width=16, lr=5e-3)),
    (0.5, UNetSettings(width=16, lr=7e-3)),
    (0.5, UNetSettings(width=16, lr=1e-2)),
    (1.0, UNetSettings(width=16, lr=7e-3)),
)


# the SAM4EM sweep (stage 1 alone, same minutes per trial as the U-Net's), around the
# demo config: one step along scale and two along the learning rate; chosen on val
SAM_SWEEP = ((0.5, 3e-3), (1.0, 3e-3), (0.5, 2e-3), (0.5, 5e-3))


OVERRIDES: dict[str, Any] = {}  # --set KEY=VALUE: dotted config keys for every SAM4EM run


def base_config(
    data: Path, scale: float | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The default config pointed at ``data`` (the VNC folder), at tiling ``scale``
    (default: the config's), with the ``--set`` overrides and then ``overrides`` (dotted
    keys)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for dotted, value in (OVERRIDES | (overrides or {})).items():
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    ds = config["datasets"]["vnc"]
    ds["raw"] = str(data / "stack1" / "raw")
    ds["labels"]["source"] = str(data / "stack1" / "labels")
    config["train"]["save_every"] = 10**6
    if scale is not None:
        config["tiling"]["scale"] = scale
    return validate_config(config, "benchmark config")


def _with(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return validate_config(out, "benchmark config")


class Bench:
    """The imported volume, its test labels and tile stores per scale."""

    def __init__(self, data: Path, work: Path, overrides: dict[str, Any] | None = None) -> None:
        self.data, self.work, self.overrides = data, work, overrides
        config = base_config(data, 1.0, overrides)
        work.mkdir(parents=True, exist_ok=True)
        self.volume = import_dataset(
            ImportSettings.from_config(config, "vnc"), work / "volume.zarr"
        )
        root = open_group(self.volume)
        self.raw = np.asarray(root["raw"])
        self.labels = {
            c: np.asarray(truth_array(root, c)[TEST[0] : TEST[1]]) > 0 for c in config["classes"]
        }
        self._tiles: dict[float, dict[str, str]] = {}

    def config(self, scale: float | None) -> dict[str, Any]:
        """The benchmark's base config at ``scale`` (None: the config's)."""
        return base_config(self.data, scale, self.overrides)

    def tiles(self, scale: float) -> dict[str, str]:
        """Train and val tile stores at ``scale`` (written once)."""
        if scale not in self._tiles:
            config = self.config(scale)
            out = {}
            for split in ("train", "val"):
                path = self.work / f"{split}-{scale:g}.zarr"
                if not path.exists():
                    write_tiles(
                        self.volume,
                        split,
                        TilingSettings.from_config(config),
                        path,
                    )
                out[split] = str(path)
            self._tiles[scale] = out
        return self._tiles[scale]

    def score(self, probs: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
        """Test metrics of probabilities (C, 4, Y, X) at the val-chosen thresholds."""
        dice, consistency, truth_consistency, f1 = {}, {}, {}, {}
        for i, (cls, truth) in enumerate(self.labels.items()):
            mask = probs[i] >= thresholds.get(cls, 0.5)
            ids = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
            metrics = metrics_of([class_counts(mask, truth, ids, 26, 2)[0]])
            dice[cls] = round(metrics["dice"], 4)
            consistency[cls] = round(metrics["consistency_predicted"], 4)
            truth_consistency[cls] = round(metrics["consistency_true"], 4)
            f1[cls] = round(metrics["f1_iou50"], 4)
        return {
            "test_dice": dice,
            "consistency": consistency,
            "consistency_truth": truth_consistency,
            "mito_f1_iou50": f1.get("mito"),
            "thresholds": thresholds,
        }


def _predict_sam(checkpoint: Path, bench: Bench, memory: bool, tta: bool) -> np.ndarray:
    model, payload = load_checkpoint(checkpoint)
    scale = float(payload["extra"].get("scale", 1.0))
    memory = memory and uses_memory(payload["extra"])  # as the pipeline runs it
    settings = PredictSettings(memory=memory, scale=scale, tta=tta)
    predictor = StackPredictor(model, settings, pick_device())
    start = TEST[0] - (WARMUP if memory else 0)
    return predictor.predict(bench.raw[start : TEST[1]])[:, TEST[0] - start :]


def _memory_off_thresholds(checkpoint: Path, config: dict[str, Any], val: str) -> dict:
    """Val-chosen thresholds of the stage-2 weights run slice by slice (memory off)."""
    model = load_checkpoint(checkpoint)[0]
    s = StageSettings.from_config(config, 2)
    table = slice_by_slice_table(model, TileSet([val], sequences=False), s, pick_device())
    return choose_thresholds(table, THRESHOLD_LEVELS)


def run_sam4em(
    variant: str,
    bench: Bench,
    scale: float,
    seed: int,
    minutes: float,
    share: float,
    tta: bool,
    lr: float | None = None,
    reuse: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train one SAM4EM variant within ``minutes`` (stage 2 gets ``share``) and score it;
    ``full`` also yields ``no_memory_same_weights``. With ``reuse`` a stage-2 checkpoint
    already in the run's folder is scored again instead (e.g. with another test-time
    policy); its training record comes from the checkpoint."""
    work = bench.work / f"{variant}-s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    tiles = bench.tiles(scale)
    config = _with(
        bench.config(scale),
        model__two_stage=variant != "single_stage",
        model__high_res=variant != "no_high_res",
        model__seed=seed,
        train__seed=seed,
        train__stage1__lr=lr or bench.config(scale)["train"]["stage1"]["lr"],
        train__stage1__steps=10**7,
        train__stage1__minutes=minutes * (1 - share),
        train__stage2__steps=10**7,
        train__stage2__minutes=minutes * share,
    )
    if reuse and (work / "stage2.pt").is_file():
        info: dict[str, Any] = {"reused": str(work / "stage2.pt"), "scale": scale}
    else:
        s1, s2 = (TrainSettings.from_config(config, stage) for stage in (1, 2))
        r1 = run_stage(s1, [tiles["train"]], [tiles["val"]], work / "stage1.pt",
                       work_dir=work / "s1")  # fmt: skip
        r2 = run_stage(s2, [tiles["train"]], [tiles["val"]], work / "stage2.pt",
                       init=str(work / "stage1.pt"), work_dir=work / "s2")  # fmt: skip
        minutes_used = round((r1.elapsed_s + r2.elapsed_s) / 60, 2)
        info = {"steps": {"stage1": r1.step, "stage2": r2.step}, "train_minutes": minutes_used,
                "scale": scale}  # fmt: skip
    extra = load_checkpoint(work / "stage2.pt")[1]["extra"]
    thresholds = extra["thresholds"]
    info["model_choice"] = extra.get("choice")
    info["val_dice"] = round(float(np.mean(list(extra["val_dice_at_thresholds"].values()))), 4)
    probs = _predict_sam(work / "stage2.pt", bench, True, tta)
    out = {variant: info | bench.score(probs, thresholds)}
    if variant == "full":
        off = _memory_off_thresholds(work / "stage2.pt", config, tiles["val"])
        probs = _predict_sam(work / "stage2.pt", bench, False, tta)
        out["no_memory_same_weights"] = info | bench.score(probs, off)
    return out


def _unet_run(bench: Bench, scale: float, u: UNetSettings, seed: int, minutes: float):
    config = _with(bench.config(scale), train__seed=seed)
    s = replace(StageSettings.from_config(config, 1), steps=10**7, minutes=minutes)
    tiles, seqs = bench.tiles(scale), u.context > 0
    train = TileSet([tiles["train"]], sequences=seqs)
    val = TileSet([tiles["val"]], sequences=seqs)
    return train_unet(train, val, s, u)


def sweep_unet(bench: Bench, minutes: float, seed: int) -> tuple[float, UNetSettings, list]:
    """The U-Net settings of best val Dice (at val-chosen thresholds) among UNET_SWEEP."""
    trials = []
    for scale, u in UNET_SWEEP:
        _, info = _unet_run(bench, scale, u, seed, minutes)
        trials.append({"scale": scale, "width": u.width, "lr": u.lr,
                       "val_dice": round(info["val_dice_at_thresholds"], 4),
                       "steps": info["steps"]})  # fmt: skip
        logging.info("unet sweep: %s", trials[-1])
    best = max(trials, key=lambda t: t["val_dice"])
    return best["scale"], UNetSettings(width=best["width"], lr=best["lr"]), trials


def sweep_sam(bench: Bench, minutes: float, seed: int) -> dict[str, Any]:
    """Stage-1 runs of the full model over SAM_SWEEP; val Dice at val-chosen thresholds."""
    trials = []
    for scale, lr in SAM_SWEEP:
        work = bench.work / f"sweep-{scale:g}-{lr:g}-s{seed}"
        tiles = bench.tiles(scale)
        config = _with(bench.config(scale), model__seed=seed, train__seed=seed,
                       train__stage1__lr=lr, train__stage1__steps=10**7,
                       train__stage1__minutes=minutes)  # fmt: skip
        result = run_stage(TrainSettings.from_config(config, 1), [tiles["train"]],
                           [tiles["val"]], work / "stage1.pt", work_dir=work / "s1")  # fmt: skip
        extra = load_checkpoint(work / "stage1.pt")[1]["extra"]
        score = float(np.mean(list(extra["val_dice_at_thresholds"].values())))
        trials.append({"scale": scale, "lr": lr, "val_dice": round(score, 4),
                       "steps": result.step})  # fmt: skip
        logging.info("sam4em sweep: %s", trials[-1])
    return {"minutes": minutes, "trials": trials,
            "best": max(trials, key=lambda t: t["val_dice"])}  # fmt: skip


def run_unet(
    bench: Bench, scale: float, u: UNetSettings, seed: int, minutes: float, tta: bool
) -> dict[str, Any]:
    """Train one U-Net within ``minutes`` and score it on the test slices."""
    model, info = _unet_run(bench, scale, u, seed, minutes)
    start = TEST[0] - u.context
    probs = predict_unet(model, bench.raw[start : TEST[1]], scale, u.context, tta)
    run = {"steps": info["steps"], "train_minutes": round(info["seconds"] / 60, 2),
           "scale": scale, "width": u.width, "lr": u.lr,
           "val_dice": round(info["val_dice_at_thresholds"], 4)}  # fmt: skip
    return run | bench.score(probs, info["thresholds"])


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: per-class mean and std over seeds of each per-class metric."""
    out: dict[str, Any] = {}
    for variant in dict.fromkeys(r["variant"] for r in per_seed):
        runs = [r for r in per_seed if r["variant"] == variant]
        entry: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs)}
        for key in ("test_dice", "consistency", "consistency_truth"):
            classes = runs[0][key]
            entry[key] = {c: round(float(np.mean([r[key][c] for r in runs])), 4) for c in classes}
            entry[f"{key}_std"] = {
                c: round(float(np.std([r[key][c] for r in runs])), 4) for c in classes
            }
        means = [float(np.mean(list(r["test_dice"].values()))) for r in runs]
        entry["mean_dice"] = round(float(np.mean(means)), 4)
        entry["mean_dice_std"] = round(float(np.std(means)), 4)
        entry["mito_f1_iou50"] = round(float(np.mean([r["mito_f1_iou50"] for r in runs])), 4)
        minutes = [r["train_minutes"] for r in runs if "train_minutes" in r]
        entry["train_minutes"] = round(float(np.mean(minutes)), 2) if minutes else None
        out[variant] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 (see --first-seed)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--stage2-share", type=float, default=0.3)
    parser.add_argument("--scale", type=float, default=None, help="SAM4EM tiling.scale "
                        "(default: the demo config's)")  # fmt: skip
    parser.add_argument("--sweep-minutes", type=float, default=3.0, help="per U-Net sweep run")
    parser.add_argument("--unet", default=None, help="skip the sweep: SCALE,WIDTH,LR")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation, "
                        "both models: the mean over the 8 flips/rotations")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="score SAM4EM checkpoints "
                        "already in --work instead of training them again")  # fmt: skip
    parser.add_argument("--sweep-sam", action="store_true",
                        help="only run the SAM4EM sweep")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--lr", type=float, default=None, help="SAM4EM stage-1 learning rate "
                        "(default: the demo config's)")  # fmt: skip
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="also take the runs and sweeps of these JSON files")  # fmt: skip
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/drosophila-vnc")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.accuracy")
    parser.add_argument("--variants", default="full,single_stage,no_high_res,unet,unet25d")
    parser.add_argument("--out", type=Path, help="merge the runs into this JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted, YAML value)")  # fmt: skip
    args = parser.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        OVERRIDES[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    bench = Bench(args.data, args.work)
    scale = args.scale if args.scale is not None else base_config(args.data)["tiling"]["scale"]
    old = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    for extra in args.merge:
        other = json.loads(extra.read_text())
        runs = old.get("per_seed", []) + other.get("per_seed", [])
        old = old | {k: v for k, v in other.items() if v is not None} | {"per_seed": runs}
    per_seed: list[dict[str, Any]] = old.get("per_seed", [])
    sweep = old.get("unet_sweep")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.sweep_sam:
        result = {"sam4em_sweep": sweep_sam(bench, args.sweep_minutes, seeds[0])}
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(old | result, indent=2) + "\n")
        return
    unet_choice = None
    if {"unet", "unet25d"} & set(variants):
        if args.unet:
            s, w, lr = args.unet.split(",")
            unet_choice = (float(s), UNetSettings(width=int(w), lr=float(lr)))
        else:
            s, u, trials = sweep_unet(bench, args.sweep_minutes, seeds[0])
            unet_choice, sweep = (s, u), {"minutes": args.sweep_minutes, "trials": trials}

    def keep(variant: str, seed: int, result: dict[str, Any]) -> None:
        if "reused" in result:  # a re-scored run keeps the training record it had
            old_run = next(
                (r for r in per_seed if (r["variant"], r["seed"]) == (variant, seed)), {}
            )
            result = {k: old_run[k] for k in ("steps", "train_minutes") if k in old_run} | result
        per_seed[:] = [r for r in per_seed if (r["variant"], r["seed"]) != (variant, seed)]
        per_seed.append({"variant": variant, "seed": seed} | result)
        logging.info("%s seed %d: %s", variant, seed, result)

    for seed in seeds:
        for variant in variants:
            t0 = time.perf_counter()
            if variant in SAM_VARIANTS:
                results = run_sam4em(variant, bench, scale, seed, args.minutes,
                                     args.stage2_share, args.tta, args.lr, args.reuse)  # fmt: skip
                for name, result in results.items():
                    keep(name, seed, result)
            elif variant in ("unet", "unet25d") and unet_choice:
                s, u = unet_choice
                u = replace(u, context=2 if variant == "unet25d" else 0)
                keep(variant, seed, run_unet(bench, s, u, seed, args.minutes, args.tta))
            wall = (time.perf_counter() - t0) / 60
            logging.info("%s seed %d: %.1f min wall", variant, seed, wall)
    summary = summarise(per_seed)
    report = {
        "test_dice": summary.get("full", {}).get("test_dice"),
        "ablation": {k: v["mean_dice"] for k, v in summary.items()},
        "unet": summary.get("unet", {}).get("test_dice"),
        "seeds": sorted({r["seed"] for r in per_seed}),
        "minutes": args.minutes,
        "torch_threads": torch.get_num_threads(),
        "summary": summary,
        "unet_sweep": sweep,
        "sam4em_sweep": old.get("sam4em_sweep"),
        "sam4em_settings": {
            "scale": scale,
            "lr": args.lr,
            "stage2_share": args.stage2_share,
            "tta": args.tta,
            "overrides": OVERRIDES,
        },  # fmt: skip
        "per_seed": per_seed,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
