"""Labelled crops inside a larger volume: config checks, import, tiles, the masked loss,
and a real pipeline that trains on crops, evaluates on a test crop and closes the
annotate-next loop (export, paint, paste, run again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
import zarr

from sam4em.crops import Crop, dataset_crops
from sam4em.errors import ConfigError
from sam4em.train.losses import UNKNOWN, bce_dice
from tests.conftest import (
    CROP_VALUES,
    CROPS,
    assert_user_error,
    crop_labels,
    crops_dataset,
    job_counts,
    run_cli,
    snakemake,
    tiny_config,
    write_config,
)

CLASSES = ["glia", "mito", "synapse"]


def _volume(folder: Path, shape=(6, 64, 80), seed=0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 255, shape, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "raw.tif", raw, photometric="minisblack")
    return folder / "raw.tif", raw


def _crop_entry(folder: Path, name: str, offset, shape, role: str, labels: np.ndarray, **extra):
    path = folder / f"{name}.tif"
    tifffile.imwrite(path, labels, photometric="minisblack")
    spec = {"source": str(path), "values": {"mito": 2}} | extra
    return {"name": name, "offset": list(offset), "shape": list(shape), "role": role,
            "labels": spec}  # fmt: skip


def _labels(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, shape, dtype=np.uint8)


def _dataset(tmp_path: Path, crops: list[dict]) -> dict:
    raw, _ = _volume(tmp_path)
    return {"raw": str(raw), "voxel_size": [40, 5, 5], "crops": crops}


def _import(tmp_path: Path, dataset: dict):
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset}, classes=CLASSES)
    out = tmp_path / "res" / "volume.zarr"
    return run_cli("-q", "import", "--config", str(cfg), "--dataset", "d", "--out", str(out)), out


def test_split_ranges_are_crops_of_whole_planes():
    ds = {"split": {"train": [0, 3], "test": [6, 7]}, "crops": [
        {"offset": [4, 10, 10], "shape": [2, 5, 5], "role": "val"}]}  # fmt: skip
    crops = dataset_crops(ds, "d")
    assert [c.name for c in crops] == ["split.train", "split.test", "crop0"]
    assert crops[0].resolved((10, 50, 60)).box == ((0, 4), (0, 50), (0, 60))
    assert crops[2].box == ((4, 6), (10, 15), (10, 15))
    assert crops[0].overlaps(Crop("x", "val", (3, 49, 59), (4, 50, 60)))
    assert not crops[0].overlaps(Crop("x", "val", (4, 0, 0), (5, 1, 1)))


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (lambda c: c[1].update(offset=[1, 5, 5]), "datasets.d.crops[1]", "overlaps a"),
        (lambda c: c[0]["labels"].update(ignore=2), "datasets.d.crops[0].labels.ignore",
         "also the value of class mito"),
        (lambda c: [e.update(role="val") for e in c], "datasets.d.crops",
         "no crop has role train"),
        (lambda c: c[1].update(name="a"), "datasets.d.crops[1].name", "also the name"),
    ],
)  # fmt: skip
def test_bad_crops_are_one_line_errors_before_anything_is_written(tmp_path, edit, key, words):
    folder = tmp_path / "in"
    folder.mkdir()
    crops = [
        _crop_entry(folder, "a", (0, 0, 0), (2, 16, 16), "train", _labels((2, 16, 16))),
        _crop_entry(folder, "b", (3, 0, 0), (2, 16, 16), "test", _labels((2, 16, 16))),
    ]
    edit(crops)
    r, out = _import(tmp_path, _dataset(tmp_path, crops))
    assert_user_error(r, key, words)
    assert not out.exists() and not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "offset, shape, labels_shape, key, words",
    [
        ((4, 60, 0), (2, 16, 16), (2, 16, 16), "datasets.d.crops[0]", "outside the volume"),
        ((0, 0, 0), (2, 16, 16), (2, 16, 15), "datasets.d.crops[0].labels.source",
         "does not match the crop's shape (2, 16, 16)"),
    ],
)  # fmt: skip
def test_crops_outside_the_volume_or_of_the_wrong_shape_are_refused(
    tmp_path, offset, shape, labels_shape, key, words
):
    folder = tmp_path / "in"
    folder.mkdir()
    crops = [_crop_entry(folder, "a", offset, shape, "train", _labels(labels_shape))]
    r, out = _import(tmp_path, _dataset(tmp_path, crops))
    assert_user_error(r, key, words)
    assert not out.exists()


def test_import_stores_each_crops_labels_and_where_they_are_known(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    a, b = _labels((2, 16, 16), 1), _labels((3, 10, 12), 2)
    b[:, :, 6:] = 7  # nobody painted the right half of crop b
    crops = [
        _crop_entry(folder, "a", (0, 4, 8), (2, 16, 16), "train", a),
        _crop_entry(folder, "b", (3, 40, 50), (3, 10, 12), "test", b, ignore=7),
    ]
    r, out = _import(tmp_path, _dataset(tmp_path, crops))
    assert r.returncode == 0, r.stderr
    v = zarr.open_group(str(out), mode="r")
    known, mito = v["labelled"][...], v["labels/mito/0"][...]
    expected = np.zeros(known.shape, np.uint8)
    expected[0:2, 4:20, 8:24] = 1
    expected[3:6, 40:50, 50:56] = 1
    assert (known == expected).all()  # outside every crop, and where ignored: unknown
    assert (mito[0:2, 4:20, 8:24] == (a == 2)).all()
    assert (mito[3:6, 40:50, 50:56] == (b[:, :, :6] == 2)).all()
    assert mito[known == 0].sum() == 0
    meta = v.attrs["sam4em"]
    assert [c["name"] for c in meta["crops"]] == ["a", "b"]
    assert meta["labelled_voxels"] == int(expected.sum())


def _tiles_of(tmp_path: Path, shape: tuple[int, int, int]) -> zarr.Group:
    """Tile the train crop of a volume of ``shape`` whose first 64 x 80 pixels of each
    slice are the same in every size (the crop sits there)."""
    base = tmp_path / f"v{shape[1]}"
    base.mkdir(parents=True)
    _, small = _volume(tmp_path / "small", (6, 64, 80))
    raw = np.random.default_rng(5).integers(0, 255, shape, dtype=np.uint8)
    raw[:, :64, :80] = small
    tifffile.imwrite(base / "raw.tif", raw, photometric="minisblack")
    crops = [_crop_entry(base, "a", (2, 20, 24), (2, 24, 20), "train", _labels((2, 24, 20)))]
    ds = {"raw": str(base / "raw.tif"), "voxel_size": [40, 5, 5], "crops": crops}
    model = {"img_size": 32, "memory": {"slots": 2}}
    tiling = {"stride": 16, "scale": 0.5, "sequence_length": 3}
    cfg = write_config(base / "c.yaml", {"d": ds}, classes=CLASSES, model=model, tiling=tiling)
    vol, tiles = base / "volume.zarr", base / "train.zarr"
    r = run_cli("-q", "import", "--config", str(cfg), "--dataset", "d", "--out", str(vol))
    assert r.returncode == 0, r.stderr
    r = run_cli("-q", "tile", "--config", str(cfg), "--dataset", "d", "--split", "train",
                "--volume", str(vol), "--out", str(tiles))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return zarr.open_group(str(tiles), mode="r")


def test_the_same_crops_in_a_volume_4x_larger_give_identical_tiles(tmp_path):
    small = _tiles_of(tmp_path, (6, 64, 80))
    large = _tiles_of(tmp_path, (6, 128, 160))
    for name in ("images", "labels", "origin", "scored", "sequences", "presence"):
        assert np.array_equal(small[name][...], large[name][...]), name
    labels, scored = small["labels"][...], small["scored"][...] > 0
    # a 32 px tile centred on the 12 x 10 crop (at scale 0.5): real raw around it, labels
    # known only inside the crop; the slices before it are raw-only context
    assert small["images"].shape[0] == 4 and scored.tolist() == [False, False, True, True]
    own = labels[scored][:, 1]
    assert ((own == 255).sum(axis=(1, 2)) == 32 * 32 - 12 * 10).all()
    assert (labels[~scored] == 255)[:, 1].all()


def test_the_loss_counts_only_known_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    target = (torch.rand(2, 3, 16, 16, generator=g) > 0.7).float()
    labelled = torch.ones(2, 3, dtype=torch.bool)
    masked = target.clone()
    masked[..., 8:] = UNKNOWN
    loss = bce_dice(logits, masked, labelled)
    loss.backward()
    assert logits.grad[..., 8:].abs().max() == 0  # unknown pixels teach nothing
    assert logits.grad[..., :8].abs().max() > 0
    # the same as the loss on the known half alone
    half = bce_dice(logits[..., :8].detach(), target[..., :8], labelled)
    assert torch.allclose(loss.detach(), half, atol=1e-6)
    # a class with no known pixel in the batch is left out
    only_mito = masked.clone()
    only_mito[:, [0, 2]] = UNKNOWN
    expected = bce_dice(logits[:, 1:2].detach(), masked[:, 1:2], labelled[:, 1:2])
    assert torch.allclose(bce_dice(logits.detach(), only_mito, labelled), expected, atol=1e-6)


@pytest.fixture(scope="module")
def crops_run(repo, vnc, tmp_path_factory):
    """A finished run of every stage on a 12 x 256 x 256 piece of the VNC stack labelled
    only in four crops (one partly painted)."""
    workdir = tmp_path_factory.mktemp("crops")
    dataset = crops_dataset(workdir / "data", vnc)
    config = tiny_config(dataset)
    config["datasets"] = {"cr": dataset}
    config["inference"]["block_shape"] = [6, 256, 256]
    config["analysis"] = {"annotate_box": [4, 64, 64]}
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    return workdir, cfg, config


@pytest.mark.slow
def test_a_crops_dataset_trains_on_its_crops_and_evaluates_on_its_test_crop(crops_run):
    workdir, _, _ = crops_run
    res = workdir / "results" / "cr"
    tiles = zarr.open_group(str(res / "tiles" / "train.zarr"), mode="r")
    assert [c["name"] for c in tiles.attrs["sam4em"]["crops"]] == ["a", "b"]
    origin = tiles["origin"][...]
    assert origin[:, 0].max() <= 3  # training never reaches past its crops' slices
    per_crop = (res / "eval" / "metrics_per_crop.csv").read_text()
    assert per_crop.splitlines()[0] == "crop,class,metric,value"
    assert {line.split(",")[0] for line in per_crop.splitlines()[1:]} == {"t"}
    slices = (res / "eval" / "metrics_per_slice.csv").read_text().splitlines()
    assert len(slices) == 1 + 3 * 3 and all(",t," in s for s in slices[1:])  # z 9-11
    # the pooled table of one test crop is that crop's
    pooled = (res / "eval" / "metrics.csv").read_text().splitlines()[1:]
    ours = [s.split(",", 1)[1] for s in per_crop.splitlines()[1:]]
    assert sorted(pooled) == sorted(ours)
    page = (res / "report.html").read_text()
    assert "held-out test crop(s) (t (9-12, 64-192, 64-192)" in page
    assert (res / "figures" / "report" / "overlays" / "overlay_mito.png").is_file()
    # the whole volume was still predicted, by block jobs
    pred = zarr.open_group(str(res / "pred.zarr"), mode="r")
    assert pred["mito/0"].shape == (12, 256, 256)


@pytest.mark.slow
def test_annotate_next_export_paint_and_rerun_closes_the_loop(repo, crops_run):
    workdir, cfg, config = crops_run
    res = workdir / "results" / "cr"
    table = (res / "annotate_next.csv").read_text().splitlines()
    assert table[0].startswith("rank,z0,z1,y0,y1,x0,x1,labelled,uncertainty")
    taken = [Crop(n, r, o, tuple(a + b for a, b in zip(o, s, strict=True)))
             for n, o, s, r in CROPS]  # fmt: skip
    free = []
    for row in table[1:]:
        z0, z1, y0, y1, x0, x1 = (int(v) for v in row.split(",")[1:7])
        box = Crop("c", "train", (z0, y0, x0), (z1, y1, x1))
        assert (z1 - z0, y1 - y0, x1 - x0) == (4, 64, 64)
        named = row.split(",")[7].split()
        assert named == [c.name for c in taken if box.overlaps(c)]
        if not named:
            free.append((z0, y0, x0))
    out = workdir / "paint" / "round1"
    r = run_cli("export-annotations", str(res), "--top", "1", "--out", str(out), cwd=workdir)
    assert r.returncode == 0, r.stderr
    # exporting again into the same folder never overwrites painted work
    again = run_cli("export-annotations", str(res), "--top", "1", "--out", str(out))
    assert_user_error(again, str(out), "never overwritten")
    entries = yaml.safe_load((out / "crops.yaml").read_text())
    assert len(entries) == 1 and entries[0]["role"] == "train"
    entry = entries[0]
    assert tuple(entry["offset"]) == free[0]  # the least sure crop that nothing labels
    painted = tifffile.imread(out / entry["name"] / "labels.tif")
    assert painted.shape == tuple(entry["shape"]) and painted.max() == 0
    raw = tifffile.imread(out / entry["name"] / "raw.tif")
    volume = zarr.open_group(str(res / "volume.zarr"), mode="r")
    box = tuple(slice(o, o + n) for o, n in zip(entry["offset"], entry["shape"], strict=True))
    assert np.array_equal(raw, volume["raw"][box])
    # the painter: the annotation of the box, in the export's values
    truth = crop_labels(tifffile.imread(workdir / "data" / "truth.tif"), entry["offset"],
                        entry["shape"])  # fmt: skip
    for cls, value in entry["labels"]["values"].items():
        painted[truth == CROP_VALUES[cls]] = value
    tifffile.imwrite(out / entry["name"] / "labels.tif", painted, photometric="minisblack")
    config["datasets"]["cr"]["crops"] += entries
    cfg.write_text(yaml.safe_dump(config))
    dry = snakemake(repo, workdir, "-n", "all", config=cfg)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_counts(dry.stdout)
    assert jobs["import_volume"] == 1 and jobs["train_stage1"] == 1 and jobs["tile"] == 2
    assert "fetch_demo" not in jobs
    r = snakemake(repo, workdir, "all", config=cfg)
    assert r.returncode == 0, r.stderr[-4000:]
    meta = zarr.open_group(str(res / "volume.zarr"), mode="r").attrs["sam4em"]
    assert meta["crops"][-1]["name"] == entry["name"]
    tiles = zarr.open_group(str(res / "tiles" / "train.zarr"), mode="r").attrs["sam4em"]
    assert tiles["crops"][-1]["name"] == entry["name"]
    known = zarr.open_group(str(res / "volume.zarr"), mode="r")["labelled"][box]
    assert known.all()  # painted throughout (no ignore value used)
    done = snakemake(repo, workdir, "-n", "all", config=cfg)
    assert job_counts(done.stdout) == {}, done.stdout[-2000:]


def test_check_config_refuses_a_crop_of_unknown_class(tmp_path):
    ds = {"raw": "x.tif", "voxel_size": [1, 1, 1], "crops": [
        {"offset": [0, 0, 0], "shape": [1, 2, 2], "role": "train",
         "labels": {"source": "l.tif", "values": {"axon": 1}}}]}  # fmt: skip
    cfg = write_config(tmp_path / "c.yaml", {"d": ds}, classes=CLASSES)
    r = run_cli("check-config", "--config", str(cfg))
    assert_user_error(r, "datasets.d.crops", "class 'axon' is not in classes")
    with pytest.raises(ConfigError):
        from sam4em.config import load_config

        load_config(cfg)


def test_new_crops_in_the_same_slices_make_another_training_run_not_a_resumed_one(tmp_path):
    """The trainer resumes from last.pt only for the same data: a crop added within the
    same slices, or a new import, gives the tile store another identity."""
    from sam4em.train.trainer import data_identity

    first = dict(_tiles_of(tmp_path / "a", (6, 64, 80)).attrs["sam4em"])
    again = dict(_tiles_of(tmp_path / "b", (6, 64, 80)).attrs["sam4em"])
    moved = first | {"crops": [c | {"start": [2, 20, 26]} for c in first["crops"]]}
    assert first["slices"] == moved["slices"]
    assert data_identity(first) != data_identity(moved)
    assert first["import_id"] != again["import_id"]  # each import has its own identity
    assert data_identity(first) != data_identity(again)
