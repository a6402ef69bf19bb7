"""The Snakemake workflow: dry run on the default config, and a real local run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(repo: Path, workdir: Path, *args: str, config: Path | None = None):
    cmd = [
        *SNAKEMAKE,
        "--snakefile", str(repo / "workflow" / "Snakefile"),
        "--directory", str(workdir),
        "--profile", str(repo / "profiles" / "local"),
        "--cores", "2",
        *args,
    ]  # fmt: skip
    if config is not None:  # last: --configfile takes every word after it
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_of_all_on_the_default_config(repo, tmp_path):
    r = snakemake(repo, tmp_path, "-n", "all", config=repo / "config" / "config.yaml")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = _job_counts(r.stdout + r.stderr)
    # block jobs are added once the plan_blocks checkpoint has run
    assert counts == {
        "fetch_demo": 1,
        "import_volume": 1,
        "plan_blocks": 1,
        "tile": 2,
        "train_stage1": 1,
        "train_stage2": 1,
        "stitch": 1,
        "components": 3,
        "all": 1,
        "total": 12,
    }
    assert not (tmp_path / "results").exists()  # a dry run writes no results


@pytest.fixture(scope="module")
def local_run(repo, vnc, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    config["demo"]["local_copies"] = [str(vnc)]
    # a short training run: this test is about the workflow, not accuracy
    config["train"]["stage1"].update(steps=20, val_every=10, warmup_steps=2, minutes=None)
    config["train"]["stage2"].update(steps=4, val_every=2, warmup_steps=1, minutes=None)
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    return workdir, cfg, config


def test_local_run_writes_every_stage(local_run):
    workdir, _, config = local_run
    res = workdir / "results" / "vnc"
    vol = zarr.open_group(str(res / "volume.zarr"), mode="r")
    assert vol["raw"].shape == (20, 1024, 1024)
    assert sorted(vol["labels"].array_keys()) == ["glia", "mito", "synapse"]
    train = zarr.open_group(str(res / "tiles" / "train.zarr"), mode="r")
    val = zarr.open_group(str(res / "tiles" / "val.zarr"), mode="r")
    assert train.attrs["sam4em"]["slices"] == [0, 13]
    assert val.attrs["sam4em"]["slices"] == [14, 15]
    origin = np.concatenate([train["origin"][...], val["origin"][...]])
    assert origin[:, 0].max() <= 15  # the test slices 16-19 are never tiled
    plan = json.loads((res / "blocks.json").read_text())
    assert len(plan["blocks"]) == 8
    assert plan["settings"]["block_shape"] == config["inference"]["block_shape"]
    assert (workdir / "results" / "logs" / "vnc" / "import_volume.log").is_file()
    # training: both stages, their histories and curves
    for stage, steps in ((1, 20), (2, 4)):
        history = (res / "models" / f"stage{stage}_history.csv").read_text().splitlines()
        assert history[0].startswith("step") and history[-1].split(",")[0] == str(steps)
        assert (res / "models" / f"stage{stage}_curves.png").stat().st_size > 1000
    # inference: every block done, predictions stitched
    assert sorted(p.stem for p in (res / "blocks").glob("*.done")) == sorted(
        b["id"] for b in plan["blocks"]
    )
    pred = zarr.open_group(str(res / "pred.zarr"), mode="r")
    for cls in config["classes"]:
        assert pred[cls]["0"].shape == (20, 1024, 1024)
        assert pred[cls]["1"].shape == (20, 256, 256)
    summary = json.loads((res / "predictions.json").read_text())
    assert summary["blocks"] == 8
    assert (res / "figures" / "predictions.png").stat().st_size > 10_000
    # instances: one array and one object table per class
    instances = zarr.open_group(str(res / "instances.zarr"), mode="r")
    for cls in config["classes"]:
        labels = instances[cls]["0"]
        assert labels.shape == (20, 1024, 1024) and labels.dtype == np.uint32
        table = (res / "objects" / f"{cls}.csv").read_text().splitlines()
        assert table[0].startswith("id,voxels,volume_nm3")
        assert len(table) - 1 == instances[cls].attrs["sam4em"]["objects"]


def test_second_run_has_nothing_to_do(repo, local_run):
    workdir, cfg, _ = local_run
    r = snakemake(repo, workdir, "-n", "all", config=cfg)
    assert r.returncode == 0
    assert "Nothing to be done" in r.stdout + r.stderr


def test_single_block_reruns_alone(repo, local_run):
    workdir, cfg, _ = local_run
    marker = workdir / "results" / "vnc" / "blocks" / "z0y0x0.done"
    marker.unlink()
    r = snakemake(repo, workdir, "results/vnc/blocks/z0y0x0.done", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = _job_counts(r.stdout + r.stderr)
    assert counts.get("predict_block") == 1 and counts.get("total") == 1
    assert json.loads(marker.read_text())["block"] == "z0y0x0"


def test_single_target_reruns_alone(repo, local_run):
    workdir, cfg, _ = local_run
    target = workdir / "results" / "vnc" / "blocks.json"
    before = target.read_text()
    target.unlink()
    r = snakemake(repo, workdir, "results/vnc/blocks.json", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = _job_counts(r.stdout + r.stderr)
    assert counts.get("plan_blocks") == 1 and counts.get("total") == 1
    assert target.read_text() == before


def test_dataset_target_rule(repo, local_run):
    workdir, cfg, _ = local_run
    r = snakemake(repo, workdir, "-n", "dataset_vnc", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
