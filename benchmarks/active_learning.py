"""Does the annotate-next loop pay? A lab simulated on the VNC stack; prints JSON.

The painter is the ground truth: "painting" a crop adds its box to the config (its
labels are read from the stack's annotation inside the box). The lab starts from
``--start`` random crops of 4 x 256 x 256 in the train slices (0-11), keeps slices 14-15
as its val crop and 16-19 as its test crop, and then, round after round, trains for a
fixed number of steps, predicts, and reveals ``--per-round`` more crops chosen by one
arm:

- ``annotate_next``: the least sure free candidates of ``annotate_next.csv``;
- ``random``: candidates drawn at random from the same free candidates.

Both arms share the starting crops and round 0 (one run, copied), the model, steps,
sampler, augmentation and model selection; each round retrains from scratch through
the real workflow (``snakemake ... --configfile``), so a round is exactly what a lab's
"paste the crops, run all again" does. Test Dice on slices 16-19 after every round, per
seed and arm; the summary gives the mean and the spread (min, max) over the seeds.

Usage: .venv/bin/python benchmarks/active_learning.py --seeds 0 1 --rounds 3 --steps 400
         [--work /tmp/sam4em-al] [--out benchmarks/json/active-learning-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sam4em.report.annotate_next import candidate_crops

REPO = Path(__file__).resolve().parents[1]
VNC = REPO.parent / "shared" / "data" / "drosophila-vnc"
SHAPE = (20, 1024, 1024)
BOX = (4, 256, 256)
TRAIN_Z = 12  # candidates lie in slices 0-11 (val 14-15 and test 16-19 are held out)


def candidates() -> list[tuple[int, int, int]]:
    """Offsets of the candidate crops annotate-next ranks that lie in the train slices."""
    return [c.start for c in candidate_crops(SHAPE, BOX) if c.stop[0] <= TRAIN_Z]


def config_for(seed: int, steps: int, crops: list[tuple[int, int, int]]) -> dict[str, Any]:
    """The default config with the VNC stack labelled only in ``crops`` (train), slices
    14-15 (val) and 16-19 (test), a fixed step budget, and candidates of ``BOX``."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    ds = config["datasets"]["vnc"]
    ds["raw"] = str(VNC / "stack1" / "raw")
    ds["labels"]["source"] = str(VNC / "stack1" / "labels")
    ds["split"] = {"val": [14, 15], "test": [16, 19]}
    ds["crops"] = [
        {"name": f"c{z}-{y}-{x}", "offset": [z, y, x], "shape": list(BOX), "role": "train"}
        for z, y, x in crops
    ]
    val_every = max(1, steps // 4)
    config["train"]["seed"] = seed
    config["train"]["stage1"].update(steps=steps, minutes=None, val_every=val_every)
    config["train"]["stage2"].update(steps=max(1, steps // 10), minutes=None, val_every=50)
    config["analysis"] = {"annotate_box": list(BOX), "annotate_rows": 500}
    return config


def run_round(work: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Run the workflow (``all``, as a lab does) in ``work``."""
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
         "--directory", str(work), "--profile", str(REPO / "profiles" / "local"),
         "--cores", "2", "all", "--configfile", str(cfg)],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"round failed in {work}:\n{r.stderr[-3000:]}")
    metrics = pd.read_csv(work / "results" / "vnc" / "eval" / "metrics.csv")
    dice = metrics[metrics["metric"] == "dice"].set_index("class")["value"].to_dict()
    history = pd.read_csv(work / "results" / "vnc" / "models" / "stage1_history.csv")
    return {
        "crops": len(config["datasets"]["vnc"]["crops"]),
        "labelled_voxels": len(config["datasets"]["vnc"]["crops"]) * int(np.prod(BOX)),
        "test_dice": {k: round(float(v), 4) for k, v in dice.items()},
        "test_dice_mean": round(float(np.mean(list(dice.values()))), 4),
        "best_val_dice": round(float(history.get("val_dice_mean", pd.Series([np.nan])).max()), 4),
        "wall_min": round((time.perf_counter() - start) / 60, 2),
    }


def next_crops(
    work: Path, arm: str, taken: list[tuple[int, int, int]], k: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """The ``k`` crops the arm reveals next, among the free candidates."""
    table = pd.read_csv(work / "results" / "vnc" / "annotate_next.csv", keep_default_na=False)
    free = table[(table["labelled"] == "") & (table["z1"] <= TRAIN_Z)]
    ranked = [(int(r.z0), int(r.y0), int(r.x0)) for r in free.itertuples()]
    ranked = [c for c in ranked if c not in taken]
    if arm == "annotate_next":
        return ranked[:k]
    picks = rng.choice(len(ranked), size=min(k, len(ranked)), replace=False)
    return [ranked[i] for i in sorted(picks)]


def run_seed(base: Path, seed: int, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Both arms of one seed; returns {arm: [round records]}."""
    rng = np.random.default_rng(seed)
    pool = candidates()
    start = [pool[i] for i in sorted(rng.choice(len(pool), size=args.start, replace=False))]
    first = base / f"seed{seed}-annotate_next"
    first.mkdir(parents=True, exist_ok=True)  # a stopped benchmark continues (same config)
    round0 = run_round(first, config_for(seed, args.steps, start)) | {"round": 0}
    print(json.dumps({"seed": seed, **round0}), file=sys.stderr, flush=True)
    other = base / f"seed{seed}-random"  # round 0 is the same run for both arms
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(first, other, symlinks=True)
    out: dict[str, list[dict]] = {}
    for arm in ("annotate_next", "random"):
        work = base / f"seed{seed}-{arm}"
        crops, records = list(start), [round0 | {"arm": arm}]
        arm_rng = np.random.default_rng(1000 + seed)
        for k in range(1, args.rounds):
            crops += next_crops(work, arm, crops, args.per_round, arm_rng)
            record = run_round(work, config_for(seed, args.steps, crops))
            records.append(record | {"round": k, "arm": arm})
            print(json.dumps({"seed": seed, **records[-1]}), file=sys.stderr, flush=True)
        out[arm] = records
    return out


def summary(runs: dict[int, dict[str, list[dict]]]) -> list[dict[str, Any]]:
    """Per arm and round: mean test Dice over the seeds, its min and max, voxels."""
    rows = []
    arms = next(iter(runs.values()))
    for arm in arms:
        for k in range(len(arms[arm])):
            values = [runs[s][arm][k]["test_dice_mean"] for s in runs]
            per_class = {
                c: round(float(np.mean([runs[s][arm][k]["test_dice"][c] for s in runs])), 4)
                for c in arms[arm][k]["test_dice"]
            }
            rows.append({
                "arm": arm, "round": k, "labelled_voxels": arms[arm][k]["labelled_voxels"],
                "test_dice_mean": round(float(np.mean(values)), 4),
                "min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4),
                "per_class": per_class, "seeds": len(values),
            })  # fmt: skip
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Test Dice against labelled voxels, both arms, with the seeds' range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, colour in (("annotate_next", "tab:blue"), ("random", "tab:orange")):
        r = [row for row in rows if row["arm"] == arm]
        x = [row["labelled_voxels"] / 1e6 for row in r]
        ax.plot(x, [row["test_dice_mean"] for row in r], "o-", color=colour, label=arm)
        ax.fill_between(x, [row["min"] for row in r], [row["max"] for row in r],
                        color=colour, alpha=0.2)  # fmt: skip
    ax.set_xlabel("labelled train voxels (millions)")
    ax.set_ylabel("test Dice, mean of classes (slices 16-19)")
    ax.set_title("annotate-next vs random crops (band: seeds' range)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=3, help="trainings per arm (round 0 shared)")
    parser.add_argument("--start", type=int, default=4, help="random crops to start from")
    parser.add_argument("--per-round", type=int, default=4, help="crops revealed per round")
    parser.add_argument("--steps", type=int, default=400, help="stage-1 steps per training")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sam4em-al"))
    parser.add_argument("--out", type=Path, help="also write the JSON (and a PNG beside it)")
    args = parser.parse_args()
    if not (VNC / "stack1" / "raw").is_dir():
        raise SystemExit(f"the VNC stack is not at {VNC}")
    runs = {seed: run_seed(args.work, seed, args) for seed in args.seeds}
    rows = summary(runs)
    result = {"benchmark": "active_learning", "settings": vars(args) | {"box": BOX},
              "runs": runs, "summary": rows}  # fmt: skip
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
        plot(rows, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
