"""Round trip of every supported input format through ``sam4em import``."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from sam4em.io.intensity import to_uint8
from sam4em.io.slice_folder import natural_key, to_single_channel
from tests.conftest import run_cli, write_config

SHAPE = (5, 37, 53)  # odd sizes on purpose


def _volume(dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(np.dtype(dtype), np.floating):
        return (rng.normal(size=SHAPE) * 3.5 + 1.0).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -3000), min(info.max, 60000), size=SHAPE).astype(dtype)


def _labels(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 159, 191, 223], np.uint8), size=SHAPE, p=[0.7, 0.1, 0.15, 0.05])


def _write_slices(folder: Path, data: np.ndarray, suffix: str, mode: str | None = None) -> str:
    folder.mkdir()
    for z, img in enumerate(data):
        name = folder / f"s{z}{suffix}"  # s10 must sort after s2: natural order
        if suffix == ".png":
            if mode == "I;16":
                Image.fromarray(img.astype(np.uint16)).save(name)
            elif mode == "LA":
                Image.fromarray(np.stack([img, np.full_like(img, 255)], -1), "LA").save(name)
            elif mode == "RGB":
                Image.fromarray(np.stack([img] * 3, -1), "RGB").save(name)
            else:
                Image.fromarray(img, "L").save(name)
        else:
            tifffile.imwrite(name, img)
    return str(folder)


def _write(kind: str, tmp: Path, data: np.ndarray, tag: str) -> str:
    if kind == "tiff":
        tifffile.imwrite(tmp / f"{tag}.tif", data, photometric="minisblack")
        return str(tmp / f"{tag}.tif")
    if kind == "tiff-folder":
        return _write_slices(tmp / f"{tag}_tif", data, ".tif")
    if kind.startswith("png"):
        mode = kind.split("-", 1)[1] if "-" in kind else "L"
        return _write_slices(tmp / f"{tag}_png", data, ".png", mode)
    if kind == "hdf5":
        with h5py.File(tmp / f"{tag}.h5", "a") as fh:
            fh.create_dataset(f"/volumes/{tag}", data=data, chunks=(1, 16, 16))
        return f"{tmp / f'{tag}.h5'}:/volumes/{tag}"
    if kind in ("zarr2", "zarr3"):
        store = tmp / f"{tag}_{kind}.zarr"
        grp = zarr.open_group(str(store), mode="w", zarr_format=int(kind[-1]))
        grp.create_array(f"data/{tag}", data=data, chunks=(2, 16, 16))
        return f"{store}/data/{tag}"
    if kind == "mrc":
        with mrcfile.new(tmp / f"{tag}.mrc") as mrc:
            mrc.set_data(data)
        return str(tmp / f"{tag}.mrc")
    raise AssertionError(kind)


CASES = [
    ("tiff", "uint16"),
    ("tiff-folder", "float32"),
    ("png-L", "uint8"),
    ("png-LA", "uint8"),
    ("png-RGB", "uint8"),
    ("png-I;16", "uint16"),
    ("hdf5", "int16"),
    ("zarr2", "float64"),
    ("zarr3", "uint16"),
    ("mrc", "float32"),
]


@pytest.mark.parametrize(("kind", "dtype"), CASES, ids=[f"{k}-{d}" for k, d in CASES])
def test_round_trip(tmp_path, kind, dtype):
    raw = _volume(dtype)
    labels = _labels()
    raw_spec = _write(kind, tmp_path, raw, "raw")
    label_spec = _write(kind, tmp_path, labels, "labels")
    cfg = write_config(
        tmp_path / "config.yaml",
        {
            "d": {
                "raw": raw_spec,
                "labels": {"source": label_spec, "values": {"glia": 159, "mito": [191, 223]}},
                "voxel_size": [40, 8, 8],
                "split": {"train": [0, 2], "test": [3, 4]},
            }
        },
        storage={"chunks": [2, 16, 16]},
    )
    out = tmp_path / "volume.zarr"
    result = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out))
    assert result.returncode == 0, result.stderr
    root = zarr.open_group(str(out), mode="r")
    expected_raw = raw if dtype == "uint8" else to_uint8(raw, float(raw.min()), float(raw.max()))
    got = np.asarray(root["raw"])
    assert got.dtype == np.uint8 and got.shape == SHAPE
    np.testing.assert_array_equal(got, expected_raw)
    glia = root["labels"]["glia"]["0"][...]
    np.testing.assert_array_equal(glia, (labels == 159).astype(np.uint8))
    np.testing.assert_array_equal(
        root["labels"]["mito"]["0"][...], np.isin(labels, [191, 223]).astype(np.uint8)
    )
    assert "synapse" not in root["labels"]  # not configured for this dataset
    assert root["raw"].chunks == (2, 16, 16)
    assert root.attrs["sam4em"]["raw_dtype"] == dtype
    # where the data came from, absolute: the record still holds when read from elsewhere
    assert root.attrs["sam4em"]["raw_source"] == os.path.abspath(raw_spec)
    assert os.path.isabs(root.attrs["sam4em"]["label_sources"]["glia"])


def test_per_class_mask_sources(tmp_path):
    labels = _labels()
    mito = _write("tiff", tmp_path, (labels == 191).astype(np.uint8) * 255, "mito")
    syn = _write("zarr3", tmp_path, (labels == 223).astype(np.uint8), "syn")
    raw = _write("tiff", tmp_path, _volume("uint8"), "raw")
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "d": {
                "raw": raw,
                "labels": {"masks": {"mito": mito, "synapse": syn}},
                "voxel_size": [1, 1, 1],
            }
        },
    )
    out = tmp_path / "v.zarr"
    result = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out))
    assert result.returncode == 0, result.stderr
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(root["labels"]["mito"]["0"][...], labels == 191)
    np.testing.assert_array_equal(root["labels"]["synapse"]["0"][...], labels == 223)
    assert root.attrs["sam4em"]["labelled_classes"] == ["mito", "synapse"]


def test_configured_raw_range_is_used(tmp_path):
    raw = np.linspace(0, 4000, np.prod(SHAPE)).reshape(SHAPE).astype(np.uint16)
    spec = _write("tiff", tmp_path, raw, "raw")
    cfg = write_config(
        tmp_path / "c.yaml",
        {"d": {"raw": spec, "raw_range": [1000, 3000], "voxel_size": [1, 1, 1]}},
    )
    out = tmp_path / "v.zarr"
    assert (
        run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out)).returncode == 0
    )
    got = zarr.open_group(str(out), mode="r")["raw"][...]
    np.testing.assert_array_equal(got, to_uint8(raw, 1000, 3000))
    assert got.min() == 0 and got.max() == 255


def test_natural_sort_order():
    names = ["s10.png", "s2.png", "s1.png", "S3.png"]
    assert sorted(names, key=natural_key) == ["s1.png", "s2.png", "S3.png", "s10.png"]


def test_colour_reduction():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(to_single_channel(np.stack([grey] * 3, -1)), grey)
    np.testing.assert_array_equal(to_single_channel(np.stack([grey, grey * 0 + 7], -1)), grey)
    colour = np.zeros((1, 1, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    assert to_single_channel(colour)[0, 0] == 76  # 0.299 * 255, rounded


def test_small_stack_saved_as_planar_rgb_reads_as_slices(tmp_path):
    """tifffile stores a (3, y, x) array as one planar RGB page by default: still 3 slices."""
    data = np.random.default_rng(3).integers(0, 255, (3, 20, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgbish.tif", data, photometric="rgb", planarconfig="separate")
    from sam4em.io.source import open_source

    with open_source(tmp_path / "rgbish.tif") as src:
        assert src.shape == (3, 20, 24)
        np.testing.assert_array_equal(src.read(1, 3), data[1:3])


@pytest.mark.parametrize("how", ["mean", "mode"])
@pytest.mark.parametrize("offset", [(0, 0), (3, 1), (6, 9)])
def test_pyramid_levels_overlay_level_zero(offset, how):
    """The centre of mass of an object at each level maps, through the level's OME
    scale and translation, to within half a voxel of that level of its level-0 centre."""
    from sam4em.io.pyramid import halve
    from sam4em.io.zarr_store import ngff_datasets

    voxel = [50.0, 4.6, 4.0]
    level0 = np.zeros((1, 64, 64), np.uint8)
    y, x = offset
    level0[0, 20 + y : 29 + y, 30 + x : 35 + x] = 255  # off the 4x4 grid on purpose
    levels = [level0, halve(level0, how), halve(halve(level0, how), how)]
    datasets = ngff_datasets(["0", "1", "2"], voxel, [1, 2, 4])

    def physical_centre(data, dataset):
        scale, shift = [0.0] * 3, [0.0] * 3
        for t in dataset["coordinateTransformations"]:
            if t["type"] == "scale":
                scale = t["scale"]
            else:
                shift = t["translation"]
        weights = data.astype(np.float64)
        index = [(weights * g).sum() / weights.sum() for g in np.indices(data.shape)]
        return np.array([i * s + t for i, s, t in zip(index, scale, shift, strict=True)])

    c0 = physical_centre(level0, datasets[0])
    for k, f in ((1, 2), (2, 4)):
        ck = physical_centre(levels[k], datasets[k])
        half = np.array([0.0, voxel[1], voxel[2]]) * f / 2
        assert (np.abs(ck - c0) <= half).all(), (k, c0, ck)
    # without the translation the 4x level would sit 1.5 voxels off: the test would see it
    if how == "mean":
        assert np.abs(physical_centre(levels[2], datasets[2]) - c0)[1] < 0.5 * voxel[1]


def test_pyramid_levels_tile_by_tile_equal_whole(tmp_path, monkeypatch):
    """Levels written tile by tile (a tile smaller than the volume, odd sizes) equal the
    levels of the whole array; means round, modes keep only ids that exist at level 0."""
    from sam4em.io import pyramid
    from sam4em.io.zarr_store import create_array, open_group

    rng = np.random.default_rng(5)
    probs = rng.integers(0, 256, (3, 70, 45), dtype=np.uint8)
    ids = rng.integers(0, 4, (3, 70, 45)).astype(np.uint32) * 1000
    monkeypatch.setattr(pyramid, "TILE", 16)
    group = open_group(tmp_path / "p.zarr", mode="w")
    for name, data, how in (("probs", probs, "mean"), ("ids", ids, "mode")):
        sub = group.create_group(name)
        create_array(sub, "0", data.shape, (2, 8, 8), data.dtype)[...] = data
        pyramid.write_levels(sub, ["0", "1", "2"], [1, 2, 4], how)
        whole = [data]
        for _ in range(2):
            whole.append(pyramid.halve(whole[-1], how))
        for k in (1, 2):
            got = np.asarray(sub[str(k)])
            assert got.shape == pyramid.level_shape(data.shape, 2**k)
            np.testing.assert_array_equal(got, whole[k])
    block = probs[:, :2, :2].astype(np.float32).mean(axis=(1, 2))
    np.testing.assert_array_equal(np.asarray(group["probs/1"])[:, 0, 0], np.rint(block))
    assert set(np.unique(np.asarray(group["ids/2"]))) <= set(np.unique(ids))
    # a 2x2 block with three of one id takes that id
    four = np.array([[[7, 7], [7, 3]]], np.uint32)
    assert pyramid.halve(four, "mode")[0, 0, 0] == 7
    assert pyramid.pyramid_factors((5, 1024, 300)) == [1, 2]
    assert pyramid.pyramid_factors((5, 512, 512)) == [1]
    assert pyramid.pyramid_factors((5, 5000, 20000)) == [1, 2, 4, 8, 16, 32, 64]


@pytest.mark.parametrize("how", ["mean", "mode"])
def test_levels_written_by_blocks_then_finished_equal_whole(tmp_path, how):
    """Block jobs write the levels their blocks cover in whole chunks, the last step the
    rest from the blocks' last level: the same arrays as levels of the whole volume."""
    from sam4em.blocks.plan import core_boxes
    from sam4em.io import pyramid
    from sam4em.io.zarr_store import create_array, open_group

    rng = np.random.default_rng(6)
    shape, chunks, block = (3, 2100, 1500), (1, 64, 64), (2, 256, 256)
    data = rng.integers(0, 4, shape).astype(np.uint8) * 60
    paths, factors = pyramid.block_pyramid(shape, chunks, block)
    assert factors == [1, 2, 4]  # 4 x 64 divides 256; 8 x 64 does not
    assert pyramid.pyramid_factors(shape) == [1, 2, 4, 8]
    whole = open_group(tmp_path / "whole.zarr", mode="w")
    create_array(whole, "0", shape, chunks, data.dtype)[...] = data
    pyramid.write_levels(whole, ["0", "1", "2", "3"], [1, 2, 4, 8], how)
    blocks = open_group(tmp_path / "blocks.zarr", mode="w")
    create_array(blocks, "0", shape, chunks, data.dtype)
    pyramid.create_levels(blocks, paths, factors)
    for _, box in core_boxes(shape, block):
        blocks["0"][box.slices()] = data[box.slices()]
        pyramid.write_block_levels(
            blocks, paths, factors, box.start, box.stop, how, data[box.slices()]
        )
    pyramid.write_levels(blocks, ["0", "1", "2", "3"], [1, 2, 4, 8], how, done=2)
    for k in "0123":
        np.testing.assert_array_equal(np.asarray(blocks[k]), np.asarray(whole[k]), err_msg=k)
