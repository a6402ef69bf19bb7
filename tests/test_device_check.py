"""The GPU check (benchmarks/device_check.py) works before any GPU machine is there: its
smoke mode runs every section's code on the CPU at tiny sizes, bf16 autocast included."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "model", "inference", "training")


@pytest.mark.slow
def test_smoke_run_measures_every_section(tmp_path: Path, vnc: Path) -> None:
    out = tmp_path / "out"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--smoke", "--data", str(vnc),
         "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={"OUT": str(out)} | _env(),
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert report == json.loads((out / "device_check.json").read_text())
    assert report["mode"] == "smoke" and report["errors"] == {}
    assert all(name in report for name in SECTIONS)
    # under 3 minutes of this 2-core machine: 36 s of wall time alone. In `make test` the
    # background SLURM run shares the CPU (wall time then reached 250 s and more), so the
    # bound is on the run's own CPU time: 3 minutes of both cores
    assert cpu_s < 2 * 180, cpu_s
    (case,) = report["model"].values()
    assert case["forward_2d_tiles_per_s"] > 0 and case["memory_step_tiles_per_s"] > 0
    assert case["stage1_lora_steps_per_s"] > 0
    assert 0 < case["params_trainable"] < case["params_total"]  # LoRA: the base is frozen
    inf = report["inference"]
    assert inf["volume_shape"] == [20, 128, 128]
    assert inf["slices_per_s"] > 0 and inf["tta_slices_per_s"] > 0
    # 8 views cost more. Measured in the run's own CPU time: wall time is not a fair
    # yardstick here, where the background SLURM run's training jobs share the two cores
    # during one pass and not the other (plain 26.4 s against 8-view 14.2 s once)
    assert inf["tta_cpu_seconds"] > inf["cpu_seconds"] > 0, inf
    # both timed, on a CPU that other jobs share here: the ratio means something on a GPU
    assert inf["bare_model_seconds"] > 0 and inf["overhead_ratio"] > 0
    assert len(report["training"]) == 2
    for run in report["training"].values():
        for variant in ("full", "no_memory_same_weights"):
            scores = run[variant]
            assert scores["steps"]["stage1"] > 0 and scores["steps"]["stage2"] > 0
            assert set(scores["test_dice"]) == {"glia", "mito", "synapse"}
            assert all(0.0 <= d <= 1.0 for d in scores["test_dice"].values())


@pytest.mark.slow
def test_a_failing_section_is_recorded_and_the_rest_still_run(tmp_path: Path, vnc: Path) -> None:
    """A stack with one slice of another size: the import in the inference and training
    sections refuses it; the environment and model sections still report."""
    stack = tmp_path / "data" / "stack1"
    shutil.copytree(vnc / "stack1" / "labels", stack / "labels")
    (stack / "raw").mkdir()
    for i, path in enumerate(sorted((vnc / "stack1" / "raw").glob("*.tif"))):
        image = tifffile.imread(path)
        tifffile.imwrite(stack / "raw" / path.name, image[:800, :800] if i == 5 else image)
    out = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "benchmarks/device_check.py", "--smoke", "--data", str(stack.parent),
         "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert r.returncode == 1
    report = json.loads(out.read_text())
    assert set(report["errors"]) == {"inference", "training"}, report["errors"]
    assert all("InputDataError" in e for e in report["errors"].values())
    assert report["model"] and report["environment"]["device"] == "cpu"
    assert set(report["section_seconds"]) == set(SECTIONS)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OUT"}


@pytest.mark.slow
def test_bundle_fits_and_installs_for_the_devices_python(tmp_path: Path, vnc: Path) -> None:
    """``make device-bundle``'s script: every missing package as a wheel that pip installs
    offline for CPython 3.12 on manylinux x86_64, the demo stack, under 64 MiB."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from device_bundle import LIMIT_BYTES, MISSING, PLATFORMS, folder_bytes

    bundle = tmp_path / "bundle"
    r = subprocess.run(
        [sys.executable, "benchmarks/device_bundle.py", "--out", str(bundle), "--data", str(vnc)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert 0 < folder_bytes(bundle) <= LIMIT_BYTES
    assert (bundle / "COMMAND").read_text().startswith("python3 -m pip install")
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    assert names == set(MISSING)
    assert all("cp312" in w.name or "py3-none" in w.name or "py2.py3" in w.name for w in wheels)
    raws = list((bundle / "data" / "drosophila-vnc" / "stack1" / "raw").glob("*.tif"))
    assert len(raws) == 20
    site = tmp_path / "site"
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
         *platforms, "--target", str(site), *map(str, wheels)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    for module in ("zarr", "numcodecs", "segment_anything", "cc3d", "jsonschema", "ome_zarr"):
        assert (site / module).is_dir() or list(site.glob(f"{module}*.so")), module
