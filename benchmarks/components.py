"""Block-wise connected components vs cc3d on the whole volume; prints JSON.

For volumes of 1x, 8x and 27x a 256^3 base (random blobs: smoothed noise, thresholded),
each method runs in its own process so that peak RSS is its own: time, peak RSS and
whether the partitions are identical (compared through a one-to-one label map).
Usage: .venv/bin/python benchmarks/components.py [--base 256] [--scales 1,2,3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np, zarr
from sam4em.io.zarr_store import open_group
method, path, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = open_group(path, mode="r+")
mask = root["mask"]
t0 = time.perf_counter()
def new(name, dtype):
    return root.create_array(name, shape=mask.shape, chunks=mask.chunks, dtype=dtype,
                             overwrite=True)
if method == "whole":
    import cc3d
    labels = cc3d.connected_components(np.asarray(mask, dtype=np.uint8), connectivity=26)
    new("whole", "uint32")[...] = labels
else:
    from sam4em.postprocess.block_components import blockwise_components
    scratch, out = new("scratch", "uint64"), new("blockwise", "uint32")
    blockwise_components(lambda b: np.asarray(mask[b.slices()]), mask.shape, (block,) * 3, 26,
                         scratch, out)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_volume(path: Path, size: int, seed: int) -> None:
    """A random blob mask of size^3, written chunk by chunk (64^3 chunks)."""
    import numpy as np
    from scipy import ndimage

    from sam4em.io.zarr_store import open_group

    root = open_group(path, mode="w")
    mask = root.create_array("mask", shape=(size,) * 3, chunks=(64,) * 3, dtype="bool")
    rng = np.random.default_rng(seed)
    step = 128
    for z in range(0, size, step):
        for y in range(0, size, step):
            for x in range(0, size, step):
                noise = ndimage.gaussian_filter(rng.random((step + 8,) * 3), 3)[4:-4, 4:-4, 4:-4]
                mask[z : z + step, y : y + step, x : x + step] = noise > 0.5 + 0.004
    return None


def same_partition(path: Path) -> bool:
    """One-to-one label map between the two results, compared chunk slab by slab."""
    import numpy as np

    from sam4em.io.zarr_store import open_group

    root = open_group(path)
    a, b = root["whole"], root["blockwise"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=256)
    parser.add_argument("--scales", default="1,2,3", help="edge multiples (volume 1x, 8x, 27x)")
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks/.components")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cases = []
    for scale in map(int, args.scales.split(",")):
        size = args.base * scale
        path = args.work / f"blobs_{size}.zarr"
        make_volume(path, size, seed=scale)
        runs = {}
        for method in ("whole", "blockwise"):
            r = subprocess.run([sys.executable, "-c", CHILD, method, str(path), str(args.block)],
                               capture_output=True, text=True, check=True)  # fmt: skip
            runs[method] = json.loads(r.stdout.strip().splitlines()[-1])
        cases.append({
            "volume": f"{scale ** 3}x ({size}^3)",
            "identical": same_partition(path),
            "whole_seconds": round(runs["whole"]["seconds"], 2),
            "blockwise_seconds": round(runs["blockwise"]["seconds"], 2),
            "whole_rss_mb": round(runs["whole"]["rss_mb"], 1),
            "blockwise_rss_mb": round(runs["blockwise"]["rss_mb"], 1),
        })  # fmt: skip
    print(json.dumps({"identical": all(c["identical"] for c in cases), "cases": cases}, indent=2))


if __name__ == "__main__":
    main()
