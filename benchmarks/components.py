"""Block-wise connected components (the workflow's jobs) vs cc3d on the whole volume;
prints JSON.

For volumes of 1x, 8x and 27x a 256^3 base (random blobs: smoothed noise, thresholded,
stored as a prediction store of 0/255 probabilities), the whole-volume reference (read,
``cc3d``, write with the codec of ``instances.zarr``) runs in one process; the
block-wise run is the components jobs (:class:`sam4em.postprocess.instances.ComponentJobs`),
each phase in its own process running its jobs one after another, so a phase's peak
RSS (VmHWM: ``ru_maxrss`` would carry this process's peak over the fork) is that of its
largest job.
Job times are measured inside the process (no interpreter start-up; that is reported
once as ``job_startup_seconds``); ``time_ratio`` sums label, contacts, merge and relabel
(``finish`` writes viewer levels, which the reference does not, and is reported apart).
With ``--snakemake`` the 27x case also runs through the real workflow rules with 2 jobs
at a time, wall time reported.
Usage: .venv/bin/python benchmarks/components.py [--base 256] [--scales 1,2,3] [--block 256]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WHOLE = r"""
import json, sys, time
import cc3d, numpy as np
from sam4em.io.zarr_store import create_array, open_group
t0 = time.perf_counter()
probs = open_group(sys.argv[1])["mito/0"]
labels = cc3d.connected_components(np.asarray(probs) >= 128, connectivity=26)
out = open_group(sys.argv[2], mode="w")
create_array(out, "whole", probs.shape, probs.chunks, "uint32")[...] = labels
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"seconds": time.perf_counter() - t0, "rss_mb": int(hwm.split()[1]) / 1024}))
"""

PHASE = r"""
import json, sys, time
from pathlib import Path
from sam4em.postprocess.instances import ComponentJobs
from sam4em.postprocess.settings import ComponentSettings
pred, out, work, step, block = sys.argv[1:6]
settings = ComponentSettings(connectivity=26, block_shape=(int(block),) * 3, threshold=0.5)
def jobs():
    return ComponentJobs(settings, Path(pred), "mito", Path(out), Path(work))
seconds = []
names = [name for name, _, _ in jobs().blocks()]
calls = {"merge": [()], "finish": [(Path(work) / "mito.csv",)]}.get(step, [(n,) for n in names])
for args in calls:
    t0 = time.perf_counter()
    getattr(jobs(), step)(*args)
    seconds.append(time.perf_counter() - t0)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"jobs": len(seconds), "seconds": sum(seconds), "max_job_seconds": max(seconds),
                  "rss_mb": int(hwm.split()[1]) / 1024}))
"""

STEPS = ("label", "contacts", "merge", "relabel", "finish")


def make_volume(path: Path, size: int, seed: int) -> None:
    """A prediction store of size^3 random blobs (0/255), written chunk by chunk (64^3)."""
    import numpy as np
    from scipy import ndimage

    from sam4em.predict.pred_store import ensure_pred_store, mark_complete, store_identity

    identity = store_identity((size,) * 3, (64,) * 3, ["mito"])
    store = ensure_pred_store(path, identity, [8.0, 8.0, 8.0])
    probs = store["mito/0"]
    rng = np.random.default_rng(seed)
    step = 128
    for z in range(0, size, step):
        for y in range(0, size, step):
            for x in range(0, size, step):
                noise = ndimage.gaussian_filter(rng.random((step + 8,) * 3), 3)[4:-4, 4:-4, 4:-4]
                blobs = (noise > 0.5 + 0.004).astype(np.uint8) * 255
                probs[z : z + step, y : y + step, x : x + step] = blobs
    mark_complete(store, {"model": "benchmark", "volume": "blobs", "blocks": 0})


def same_partition(a, b) -> bool:
    """One-to-one label map between two label arrays, compared slab by slab."""
    import numpy as np

    forward: dict[int, int] = {}
    backward: dict[int, int] = {}
    for z in range(0, a.shape[0], 64):
        x, y = np.asarray(a[z : z + 64]).ravel(), np.asarray(b[z : z + 64]).ravel()
        if not np.array_equal(x == 0, y == 0):
            return False
        pairs = np.unique(np.stack([x[x > 0], y[y > 0]], axis=1), axis=0)
        for p, q in pairs:
            if forward.setdefault(int(p), int(q)) != q or backward.setdefault(int(q), int(p)) != p:
                return False
    return True


def _child(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def startup_seconds() -> float:
    """Wall time of starting Python and importing what a components job imports."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sam4em.postprocess.instances"], check=True)
    return time.perf_counter() - t0


def snakemake_wall(pred: Path, work: Path, block: int) -> float:
    """The components rules of the real workflow on ``pred`` (as a dataset's pred.zarr,
    with its block plan in place), 2 jobs at a time; wall seconds."""
    import yaml

    from sam4em.blocks.plan import PlanSettings, write_plan
    from sam4em.config import validate_config

    res = work / "results" / "blobs"
    res.mkdir(parents=True)
    (res / "pred.zarr").symlink_to(pred.resolve())
    (res / "predictions.json").write_text("{}")
    raw = work / "raw.tif"
    raw.write_bytes(b"")  # never read: only the components rules run
    config = {
        "results_dir": "results",
        "classes": ["mito"],
        # "src" gives blobs a model in the DAG (nothing of it is built or read)
        "datasets": {
            "blobs": {"raw": str(raw), "voxel_size": [8, 8, 8]},
            "src": {
                "raw": str(raw),
                "voxel_size": [8, 8, 8],
                "split": {"train": [0, 0]},
                "labels": {"masks": {"mito": str(raw)}},
            },
        },
        "inference": {"block_shape": [block] * 3, "chunks": [64] * 3, "model_from": "src"},
        "components": {
            "threshold": 0.5,
            "connectivity": 26,
            "min_volume_nm3": 0,
            "open_nm": 0,
            "close_nm": 0,
        },
    }
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    import zarr

    shape = zarr.open_group(str(pred), mode="r")["mito/0"].shape
    write_plan(res / "blocks.json", shape, PlanSettings.from_config(validate_config(config)))
    rules = ["components_label", "components_contacts", "components_merge",
             "components_relabel", "components"]  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow/Snakefile"),
           "--directory", str(work), "--configfile", str(config_path), "--cores", "2",
           "--jobs", "2", "results/blobs/objects/mito.csv", "--allowed-rules", *rules]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout[-3000:] + r.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=256)
    parser.add_argument("--scales", default="1,2,3", help="edge multiples (volume 1x, 8x, 27x)")
    parser.add_argument("--block", type=int, default=256, help="block edge (voxels)")
    parser.add_argument("--snakemake", action="store_true", help="also a workflow run (27x)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.components")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    from sam4em.io.zarr_store import open_group

    cases = []
    for scale in map(int, args.scales.split(",")):
        size = args.base * scale
        pred = args.work / f"blobs_{size}.zarr"
        make_volume(pred, size, seed=scale)
        whole = _child(WHOLE, str(pred), str(args.work / f"whole_{size}.zarr"))
        out, work = args.work / f"instances_{size}.zarr", args.work / f"work_{size}"
        phases = {s: _child(PHASE, str(pred), str(out), str(work), s, str(args.block))
                  for s in STEPS}  # fmt: skip
        labelled = sum(phases[s]["seconds"] for s in STEPS[:4])
        case = {
            "volume": f"{scale**3}x ({size}^3)",
            "blocks": phases["label"]["jobs"],
            "identical": same_partition(
                open_group(args.work / f"whole_{size}.zarr")["whole"], open_group(out)["mito/0"]
            ),
            "whole_seconds": round(whole["seconds"], 2),
            "blockwise_seconds": round(labelled, 2),
            "time_ratio": round(labelled / whole["seconds"], 2),
            "finish_seconds": round(phases["finish"]["seconds"], 2),
            "whole_rss_mb": round(whole["rss_mb"], 1),
            "blockwise_rss_mb": round(max(phases[s]["rss_mb"] for s in STEPS[:4]), 1),
            "phases": phases,
        }
        cases.append(case)
        if args.snakemake and scale == max(map(int, args.scales.split(","))):
            case["snakemake_2_jobs_wall_seconds"] = round(
                snakemake_wall(pred, args.work / "snakemake", args.block), 1
            )
            made = args.work / "snakemake/results/blobs/instances.zarr"
            case["snakemake_identical"] = same_partition(
                open_group(args.work / f"whole_{size}.zarr")["whole"], open_group(made)["mito/0"]
            )
    report = {
        "identical": all(c["identical"] for c in cases),
        "block": args.block,
        "time_ratio_27x": cases[-1]["time_ratio"],
        "rss_ratio": round(cases[-1]["blockwise_rss_mb"] / cases[0]["blockwise_rss_mb"], 2),
        "job_startup_seconds": round(startup_seconds(), 2),
        "cases": cases,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
