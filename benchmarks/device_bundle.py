"""Fill ``benchmarks/.device-bundle/`` with what the GPU check needs on a bare device
machine: the wheels its Python lacks, and the demo stack 1 (raw and labels).

The device machines (benchmarks/README.md) have Python 3.12 with torch, torchvision,
peft, scikit-image, tifffile, h5py, pandas, matplotlib and their common dependencies,
but no internet: the missing packages travel as wheels (``pip download --no-deps``, one
version of each: the one installed here, for CPython 3.12 on manylinux x86_64), with
``--python-version`` for another interpreter. The whole folder must stay under the 64 MiB
a device command may carry; this script refuses to finish above it.

Usage: .venv/bin/python benchmarks/device_bundle.py [--out DIR] [--data DIR]
(or ``make device-bundle``)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / ".device-bundle"
LIMIT_BYTES = 64 * 2**20
#: what the check imports that the device image does not have, with their own needs
#: that it lacks too (the image's list: the device tool's KINDS.md)
MISSING = ("zarr", "numcodecs", "donfig", "google-crc32c", "segment-anything",
           "connected-components-3d", "jsonschema", "jsonschema-specifications",
           "referencing", "rpds-py", "mrcfile", "ome-zarr", "ome-zarr-models", "dask",
           "partd", "locket", "importlib-metadata", "lazy-importer", "pydantic",
           "pydantic-core", "pydantic-zarr", "annotated-types", "typing-inspection",
           "deprecated", "rangehttpserver")  # fmt: skip
#: manylinux tags pip may take for the device (glibc 2.17 and newer builds)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
COMMAND = (
    "python3 -m pip install -q --no-deps --no-index --target /tmp/site "
    "benchmarks/.device-bundle/wheels/*.whl && PYTHONPATH=/tmp/site:. python3 "
    "benchmarks/device_check.py --data benchmarks/.device-bundle/data/drosophila-vnc"
)


def download_wheels(dest: Path, python_version: str) -> list[Path]:
    """The :data:`MISSING` wheels at this environment's versions, for ``python_version``."""
    pins = [f"{name}=={version(name)}" for name in MISSING]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", python_version, "--implementation", "cp", *platforms,
         "--dest", str(dest), *pins],
        check=True,
    )  # fmt: skip
    return sorted(dest.glob("*.whl"))


def copy_stack(vnc: Path, dest: Path) -> None:
    """Stack 1's raw slices and labels, in the layout the check reads."""
    for part in ("raw", "labels"):
        shutil.copytree(vnc / "stack1" / part, dest / "drosophila-vnc" / "stack1" / part)


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/drosophila-vnc")
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    if not (args.data / "stack1" / "raw").is_dir():
        raise SystemExit(f"device_bundle: {args.data} has no stack1/raw (pass --data)")
    shutil.rmtree(args.out, ignore_errors=True)
    wheels = download_wheels(args.out / "wheels", args.python_version)
    copy_stack(args.data, args.out / "data")
    size = folder_bytes(args.out)
    (args.out / "COMMAND").write_text(COMMAND + "\n")
    print(f"{args.out}: {len(wheels)} wheels, {size / 2**20:.1f} MiB in all")
    if size > LIMIT_BYTES:
        raise SystemExit(f"device_bundle: {size / 2**20:.1f} MiB is over the 64 MiB limit")
    carry = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"on the device machine (carry {carry}):\n{COMMAND}")


if __name__ == "__main__":
    main()
