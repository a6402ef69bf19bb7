"""The Snakemake workflow: dry run on the default config, and a real local run."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import zarr

from tests.conftest import SNAKEMAKE, job_counts, snakemake

pytestmark = pytest.mark.slow  # real Snakemake runs of the whole pipeline


def test_dry_run_of_all_on_the_default_config(repo, tmp_path):
    r = snakemake(repo, tmp_path, "-n", "all", config=repo / "config" / "config.yaml")
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout + r.stderr)
    # block jobs are added once the plan_blocks checkpoint has run
    assert counts == {
        "fetch_demo": 1,
        "import_volume": 1,
        "plan_blocks": 1,
        "tile": 2,
        "train_stage1": 1,
        "train_stage2": 1,
        "stitch": 1,
        "components_merge": 3,
        "components": 3,
        "analyze_objects": 2,  # synapse (contacts with glia) and mito (nearest synapse)
        "evaluate": 1,
        "report": 1,
        "layers": 1,
        "annotate_next": 1,
        "all": 1,
        "total": 21,
    }
    assert not (tmp_path / "results").exists()  # a dry run writes no results


def test_local_run_writes_every_stage(local_run):
    workdir, _, config = local_run
    res = workdir / "results" / "vnc"
    vol = zarr.open_group(str(res / "volume.zarr"), mode="r")
    assert vol["raw"].shape == (20, 1024, 1024)
    truth = ["glia", "mito", "synapse"]  # and, after the layers step, their objects
    assert sorted(vol["labels"].group_keys()) == sorted([*truth, *(f"{c}_objects" for c in truth)])
    assert vol["raw_2x"].shape == (20, 512, 512)  # a viewer level
    train = zarr.open_group(str(res / "tiles" / "train.zarr"), mode="r")
    val = zarr.open_group(str(res / "tiles" / "val.zarr"), mode="r")
    assert train.attrs["sam4em"]["slices"] == [0, 13]
    assert val.attrs["sam4em"]["slices"] == [14, 15]
    origin = np.concatenate([train["origin"][...], val["origin"][...]])
    assert origin[:, 0].max() <= 15  # the test slices 16-19 are never tiled
    plan = json.loads((res / "blocks.json").read_text())
    assert len(plan["blocks"]) == 2  # the demo: two block jobs down the stack
    assert plan["settings"]["block_shape"] == config["inference"]["block_shape"]
    assert (workdir / "results" / "logs" / "vnc" / "import_volume.log").is_file()
    # training: both stages, their histories and curves
    for stage in (1, 2):
        steps = config["train"][f"stage{stage}"]["steps"]
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
        assert pred[cls]["1"].shape == (20, 512, 512)
    summary = json.loads((res / "predictions.json").read_text())
    assert summary["blocks"] == 2
    assert (res / "figures" / "predictions.png").stat().st_size > 10_000
    # instances: one array and one object table per class
    instances = zarr.open_group(str(res / "instances.zarr"), mode="r")
    for cls in config["classes"]:
        labels = instances[cls]["0"]
        assert labels.shape == (20, 1024, 1024) and labels.dtype == np.uint32
        table = (res / "objects" / f"{cls}.csv").read_text().splitlines()
        assert table[0].startswith("id,voxels,volume_nm3")
        assert len(table) - 1 == instances[cls].attrs["sam4em"]["objects"]
    # evaluation on the test slices: every class has real numbers in [0, 1]
    metrics = {}
    for line in (res / "eval" / "metrics.csv").read_text().splitlines()[1:]:
        cls, metric, value = line.split(",")
        metrics[(cls, metric)] = float(value)
    for cls in config["classes"]:
        assert 0.0 <= metrics[(cls, "dice")] <= 1.0
        assert metrics[(cls, "objects_true")] > 0  # the test slices hold every class
    per_slice = (res / "eval" / "metrics_per_slice.csv").read_text().splitlines()
    assert len(per_slice) - 1 == 3 * 4  # three classes, test slices 16-19
    assert (res / "report.html").stat().st_size > 50_000
    # viewers: volume.zarr lists the annotation and the objects of every class
    labels = vol["labels"].attrs["ome"]["labels"]
    assert labels == [*config["classes"], *(f"{c}_objects" for c in config["classes"])]
    assert json.loads((res / "layers.json").read_text())["volume"] == "volume.zarr"
    from ome_zarr_models.v05.image import Image

    image = Image.from_zarr(zarr.open_group(str(res / "volume.zarr"), mode="r"))
    assert image.labels is not None and image.labels.ome_attributes.labels == labels
    for cls in config["classes"]:  # probabilities: every level, each half the one before
        ms = Image.from_zarr(pred[cls]).ome_attributes.multiscales[0]
        assert [d.path for d in ms.datasets] == ["0", "1"]


def test_local_run_measures_between_classes_and_ranks_what_to_annotate(local_run):
    """The cross-class tables hold every object of their class, with shares in [0, 1]
    and flags that agree with them; annotate-next ranks all 48 candidate crops (3 x 4 x 4
    boxes of 8 x 256 x 256), least sure first, each naming the split crops it overlaps
    (all of them here: the demo labels every slice) and each link opening at its centre."""
    import urllib.parse

    import pandas as pd

    workdir, _, _ = local_run
    res = workdir / "results" / "vnc"
    synapse = pd.read_csv(res / "analysis" / "synapse.csv")
    assert synapse["id"].tolist() == pd.read_csv(res / "objects" / "synapse.csv")["id"].tolist()
    assert synapse["contact_glia"].between(0, 1).all()
    assert (synapse["tripartite"] == (synapse["contact_glia"] >= 0.05)).all()
    mito = pd.read_csv(res / "analysis" / "mito.csv")
    assert mito["id"].tolist() == pd.read_csv(res / "objects" / "mito.csv")["id"].tolist()
    near = mito["nearest_synapse_nm"].dropna()
    assert len(near) and near.between(0, 1000).all()
    ranked = pd.read_csv(res / "annotate_next.csv", keep_default_na=False)
    assert len(ranked) == 48 and ranked["rank"].tolist() == list(range(1, 49))
    assert ranked["uncertainty"].is_monotonic_decreasing
    splits = {"train": range(0, 14), "val": range(14, 16), "test": range(16, 20)}
    for row in ranked.itertuples():
        assert (row.z1 - row.z0, row.y1 - row.y0, row.x1 - row.x0) == (8, 256, 256)
        named = {s for s, zs in splits.items() if set(range(row.z0, row.z1)) & set(zs)}
        assert row.labelled.split() == [f"split.{s}" for s in splits if s in named]
        state = json.loads(urllib.parse.unquote(row.neuroglancer.split("#!", 1)[1]))
        centre = [(row.x0 + row.x1) / 2, (row.y0 + row.y1) / 2, (row.z0 + row.z1) / 2]
        assert state["position"] == centre
        assert state["layers"][0]["source"].startswith("zarr3://http://127.0.0.1:8000/")


def test_second_run_has_nothing_to_do(repo, local_run):
    workdir, cfg, _ = local_run
    r = snakemake(repo, workdir, "-n", "all", config=cfg)
    assert r.returncode == 0
    assert "Nothing to be done" in r.stdout + r.stderr


def test_single_block_reruns_alone(repo, local_run):
    workdir, cfg, _ = local_run
    marker = workdir / "results" / "vnc" / "blocks" / "z0y0x0.done"
    made = marker.stat().st_mtime_ns
    marker.unlink()
    r = snakemake(repo, workdir, "results/vnc/blocks/z0y0x0.done", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("predict_block") == 1 and counts.get("total") == 1
    assert json.loads(marker.read_text())["block"] == "z0y0x0"
    os.utime(marker, ns=(made, made))  # the same block again: later tests see a finished run


def test_single_target_reruns_alone(repo, local_run):
    workdir, cfg, _ = local_run
    target = workdir / "results" / "vnc" / "blocks.json"
    before, made = target.read_text(), target.stat().st_mtime_ns
    target.unlink()
    r = snakemake(repo, workdir, "results/vnc/blocks.json", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("plan_blocks") == 1 and counts.get("total") == 1
    assert target.read_text() == before
    os.utime(target, ns=(made, made))  # the same plan again: later tests see a finished run


def test_dataset_target_rule(repo, local_run, tmp_path):
    """`dataset_vnc` asks for the whole chain of that dataset: nothing on the finished
    run, and, with one block marker gone, that block and what follows it."""
    workdir, cfg, _ = local_run
    r = snakemake(repo, workdir, "-n", "dataset_vnc", config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Nothing to be done" in r.stdout + r.stderr
    marker = workdir / "results" / "vnc" / "blocks" / "z1y0x0.done"
    marker.rename(tmp_path / "aside")
    try:
        r = snakemake(repo, workdir, "-n", "dataset_vnc", config=cfg)
    finally:
        (tmp_path / "aside").rename(marker)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts.get("predict_block") == 1 and counts.get("stitch") == 1, counts
    assert counts.get("dataset_vnc") == 1 and "train_stage2" not in counts, counts
    assert {"components", "evaluate", "report", "layers"} <= set(counts), counts


def test_snakemake_report_bundles_the_figures(repo, local_run):
    import zipfile

    workdir, cfg, config = local_run
    out = workdir / "report.zip"
    r = snakemake(repo, workdir, "--report", str(out), config=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    names = zipfile.ZipFile(out).namelist()
    for figure in ("per_slice_dice.png", "object_sizes.png", "overlay_mito.png"):
        assert any(n.endswith(figure) for n in names), (figure, names[:20])


def test_a_users_config_file_replaces_the_default(repo, tmp_path):
    """The README's way to run one's own data: the example config on its own, with two
    classes, mask folders, and a test-only stack predicted with the other stack's model."""
    import shutil

    import tifffile

    rng = np.random.default_rng(0)
    for folder, n in (("stack_a/raw", 16), ("stack_a/mito", 16), ("stack_a/synapse", 16),
                      ("stack_b/raw", 4), ("stack_b/mito", 4)):  # fmt: skip
        (tmp_path / "data" / folder).mkdir(parents=True)
        for z in range(n):
            image = rng.integers(0, 255, (64, 64), np.uint8)
            tifffile.imwrite(tmp_path / "data" / folder / f"{z:03d}.tif", image)
    cfg = tmp_path / "my.yaml"
    shutil.copy(repo / "config" / "own-data.example.yaml", cfg)
    r = snakemake(repo, tmp_path, "-n", "all", config=cfg)
    assert r.returncode == 0, r.stderr + r.stdout
    counts = job_counts(r.stdout + r.stderr)
    assert "fetch_demo" not in counts  # nothing of the demo config was merged in
    assert counts == {
        "import_volume": 2,
        "plan_blocks": 2,
        "tile": 2,  # stack A's train and val; stack B has no training data
        "train_stage1": 1,
        "train_stage2": 1,
        "stitch": 2,
        "components_merge": 4,
        "components": 4,
        "analyze_objects": 2,  # mito's nearest synapse (no glia: no contacts)
        "evaluate": 2,
        "report": 2,
        "layers": 2,
        "annotate_next": 2,
        "all": 1,
        "total": 29,
    }
    assert "results-own/stack_b/report.html" in r.stdout
    assert "results/vnc" not in r.stdout


def test_no_config_is_a_clear_error(repo, tmp_path):
    cmd = [*SNAKEMAKE, "--snakefile", str(repo / "workflow" / "Snakefile"),
           "--directory", str(tmp_path), "-n", "all"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "no config" in r.stderr + r.stdout and "--configfile" in r.stderr + r.stdout


def test_a_bad_config_under_snakemake_is_one_line_naming_the_file(repo, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("classes: [mito]\ndatasets:\n  d: {raw: r.tif, voxel_size: [1, 1]}\n")
    r = snakemake(repo, tmp_path, "-n", "all", config=cfg)
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("sam4em: error:")]
    assert lines == [f"sam4em: error: {cfg}: datasets.d.voxel_size: [1, 1] is too short"]
    assert "Traceback" not in r.stderr and 'File "' not in r.stderr


def test_paths_with_spaces_reach_the_package_whole(repo, tmp_path):
    """Every path in the rules' shell commands is quoted: a results folder and a data
    folder with spaces in their names are used as named, with no stray files."""
    import tifffile
    import yaml

    data = tmp_path / "my data"
    data.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(data / "raw.tif", rng.integers(0, 255, (6, 64, 64), np.uint8))
    tifffile.imwrite(data / "mito.tif", (rng.random((6, 64, 64)) > 0.8).astype(np.uint8))
    cfg = tmp_path / "my config.yaml"
    cfg.write_text(yaml.safe_dump({
        "results_dir": "my results",
        "classes": ["mito"],
        "datasets": {"d": {"raw": str(data / "raw.tif"), "voxel_size": [40, 8, 8],
                           "labels": {"masks": {"mito": str(data / "mito.tif")}},
                           "split": {"train": [0, 3], "val": [4, 5]}}},
        "tiling": {"stride": 32},
        "model": {"img_size": 64},
        "inference": {"block_shape": [4, 64, 64], "chunks": [1, 64, 64]},
    }))  # fmt: skip
    before = set(tmp_path.iterdir())
    r = snakemake(repo, tmp_path, "my results/d/tiles/val.zarr", config=cfg, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert zarr.open_group(str(tmp_path / "my results" / "d" / "tiles" / "val.zarr"), mode="r")
    assert (tmp_path / "my results" / "d" / "volume.zarr").is_dir()
    new = {p.name for p in set(tmp_path.iterdir()) - before} - {".snakemake"}
    assert new == {"my results"}, new  # nothing split at a space ("my", "results", ...)
