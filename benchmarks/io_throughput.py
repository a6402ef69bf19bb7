"""Import and tiling throughput on the real VNC stack; prints JSON.

Usage: .venv/bin/python benchmarks/io_throughput.py [--vnc PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from sam4em.config import validate_config
from sam4em.data.importer import import_dataset
from sam4em.data.settings import ImportSettings
from sam4em.tiling.settings import TilingSettings
from sam4em.tiling.tiles import write_tiles

DEFAULT_VNC = Path(__file__).resolve().parents[2] / "shared" / "data" / "drosophila-vnc"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vnc", type=Path, default=DEFAULT_VNC)
    args = parser.parse_args()
    config = validate_config(
        {
            "classes": ["glia", "mito", "synapse"],
            "datasets": {
                "vnc": {
                    "raw": str(args.vnc / "stack1" / "raw"),
                    "labels": {
                        "source": str(args.vnc / "stack1" / "labels"),
                        "values": {"glia": 159, "mito": 191, "synapse": 223},
                    },
                    "voxel_size": [50, 4.6, 4.6],
                    "split": {"train": [0, 13], "val": [14, 15], "test": [16, 19]},
                }
            },
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        vol = import_dataset(ImportSettings.from_config(config, "vnc"), Path(tmp) / "volume.zarr")
        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_tiles(vol, "train", TilingSettings.from_config(config), Path(tmp) / "train.zarr")
        t_tile = time.perf_counter() - t0
    voxels = 20 * 1024 * 1024
    print(
        json.dumps(
            {
                "import_seconds": round(t_import, 3),
                "import_megavoxels_per_second": round(voxels / t_import / 1e6, 2),
                "tile_train_seconds": round(t_tile, 3),
                "tile_slices_per_second": round(14 / t_tile, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
