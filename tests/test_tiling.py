"""Training tiles, z-sequences and class presence from volume.zarr."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given
from hypothesis import strategies as st

from sam4em.tiling.lattice import Lattice
from sam4em.train.tile_data import TileSet
from tests.conftest import assert_user_error, run_cli, write_config


@given(st.integers(1, 3000), st.integers(1, 512), st.data())
def test_tile_starts_cover_every_pixel(length, tile, data):
    stride = data.draw(st.integers(1, tile))
    starts = Lattice(tile, stride).starts(length)
    assert starts == sorted(set(starts)) and starts[0] == 0
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] + tile == length  # the last tile ends at the border
    assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))


def _make_volume(tmp_path, nz=6, ny=70, nx=90):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (nz, ny, nx), dtype=np.uint8)
    labels = np.zeros_like(raw)
    labels[:, 10:30, 10:40] = 191  # mito block in the upper-left
    labels[2:4, 50:60, 70:80] = 223  # a small synapse in two slices
    tifffile.imwrite(tmp_path / "raw.tif", raw, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    dataset = {
        "raw": str(tmp_path / "raw.tif"),
        "labels": {"source": str(tmp_path / "lab.tif"), "values": {"mito": 191, "synapse": 223}},
        "voxel_size": [30, 5, 5],
        "split": {"train": [0, 4], "val": [5, 5]},
    }
    return raw, labels, dataset


def test_a_lattice_needs_a_stride_within_the_tile():
    for tile, stride in ((32, 0), (32, 33), (0, 1)):
        with pytest.raises(ValueError, match="stride"):
            Lattice(tile, stride)
    with pytest.raises(ValueError, match="overlap"):
        Lattice.from_overlap(32, 32)
    assert Lattice.from_overlap(32, 8) == Lattice(32, 24)
    assert Lattice(32, 24).origins(40, 32) == [(0, 0), (8, 0)]


def _tile(tmp_path, dataset, split, tile_size=256, **tiling):
    size = tile_size
    slots = tiling.get("sequence_length", 5) - 1  # the fewest sequences allow
    model = {"img_size": size, "memory": {"slots": slots}}
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset}, tiling=tiling, model=model)
    vol = tmp_path / "volume.zarr"
    if not vol.exists():
        r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(vol))
        assert r.returncode == 0, r.stderr
    out = tmp_path / f"{split}.zarr"
    r = run_cli(
        "tile", "--config", str(cfg), "--dataset", "d", "--split", split,
        "--volume", str(vol), "--out", str(out),
    )  # fmt: skip
    return r, out


def test_tiles_match_the_volume(tmp_path):
    raw, labels, dataset = _make_volume(tmp_path)
    r, out = _tile(tmp_path, dataset, "train", tile_size=32, stride=24, sequence_length=3)
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(out), mode="r")
    meta = g.attrs["sam4em"]
    ys, xs = Lattice(32, 24).starts(70), Lattice(32, 24).starts(90)
    assert meta["tiles_per_slice"] == len(ys) * len(xs)
    assert g["images"].shape == (5 * len(ys) * len(xs), 32, 32)
    assert meta["classes"] == ["glia", "mito", "synapse"]
    assert meta["labelled_classes"] == ["mito", "synapse"]
    images, labs, origin = g["images"][...], g["labels"][...], g["origin"][...]
    presence = g["presence"][...]
    for i in range(0, len(images), 7):
        z, y, x = origin[i]
        assert 0 <= z <= 4
        np.testing.assert_array_equal(images[i], raw[z, y : y + 32, x : x + 32])
        np.testing.assert_array_equal(labs[i, 1], labels[z, y : y + 32, x : x + 32] == 191)
        np.testing.assert_array_equal(labs[i, 2], labels[z, y : y + 32, x : x + 32] == 223)
        assert labs[i, 0].max() == 0  # glia is not labelled in this dataset
        np.testing.assert_allclose(presence[i], labs[i].mean(axis=(1, 2)), rtol=1e-6)
    # synapse tiles exist only in slices 2 and 3
    syn_z = set(origin[presence[:, 2] > 0, 0].tolist())
    assert syn_z == {2, 3}
    # sequences: T consecutive slices of the same y, x
    seqs = g["sequences"][...]
    assert seqs.shape == ((5 - 3 + 1) * meta["tiles_per_slice"], 3)
    for seq in seqs:
        o = origin[seq]
        assert (np.diff(o[:, 0]) == 1).all()
        assert (o[:, 1:] == o[0, 1:]).all()


def test_val_tiles_carry_raw_context_for_the_memory_warm_up(tmp_path):
    raw, labels, dataset = _make_volume(tmp_path)  # val is slice 5 alone
    r, out = _tile(tmp_path, dataset, "val", tile_size=32, stride=32, sequence_length=4)
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(out), mode="r")
    meta = g.attrs["sam4em"]
    assert meta["context_slices"] == 3 and meta["sequence_length"] == 4
    origin, scored, labs = g["origin"][...], g["scored"][...], g["labels"][...]
    assert sorted(set(origin[:, 0].tolist())) == [2, 3, 4, 5]
    assert (scored == (origin[:, 0] == 5)).all()
    # context labels are never read: unknown (255) for every labelled class
    labelled = [meta["classes"].index(c) for c in meta["labelled_classes"]]
    assert (labs[origin[:, 0] < 5][:, labelled] == 255).all()
    assert labs[origin[:, 0] == 5].max() == 1
    seqs = g["sequences"][...]
    assert len(seqs) == meta["tiles_per_slice"]  # one window per val tile, ending at it
    for seq in seqs:
        assert origin[seq][:, 0].tolist() == [2, 3, 4, 5] and scored[seq[-1]] == 1
    # single tiles (stage 1 val) are the split's own: no context tile is scored
    assert len(TileSet([out], sequences=False)) == meta["tiles_per_slice"]
    windows = TileSet([out], sequences=True)
    assert len(windows) == meta["tiles_per_slice"] and windows[0][0].shape[0] == 4


def test_scale_and_padding(tmp_path):
    raw, labels, dataset = _make_volume(tmp_path)
    r, out = _tile(tmp_path, dataset, "train", tile_size=64, stride=64, scale=0.5)
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(out), mode="r")
    # 70x90 at scale 0.5 is 35x45: one padded 64x64 tile per slice
    assert g["images"].shape == (5, 64, 64)
    img = g["images"][0]
    assert img[35:].max() == 0 and img[:, 45:].max() == 0
    mito = g["labels"][0, 1]
    assert mito[5:15, 5:20].all() and mito[20:35, :45].sum() == 0
    assert (mito[35:] == 255).all() and (mito[:, 45:] == 255).all()  # padding: unknown
    assert g.attrs["sam4em"]["scale"] == 0.5


def test_unconfigured_split_is_an_error(tmp_path):
    _, _, dataset = _make_volume(tmp_path)
    r, _ = _tile(tmp_path, dataset, "test", tile_size=32, stride=32)
    assert_user_error(r, "datasets.d.split.test", "not configured")


@pytest.mark.parametrize("stride", [33])
def test_stride_larger_than_tile_is_refused(tmp_path, stride):
    _, _, dataset = _make_volume(tmp_path)
    cfg = write_config(
        tmp_path / "c.yaml", {"d": dataset}, tiling={"stride": stride}, model={"img_size": 32}
    )
    assert_user_error(run_cli("check-config", "--config", str(cfg)), "tiling.stride")


def test_the_old_tile_size_key_is_refused_with_its_replacement(tmp_path):
    _, _, dataset = _make_volume(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset}, tiling={"tile_size": 64, "stride": 64})
    r = run_cli("check-config", "--config", str(cfg))
    assert_user_error(r, "tiling.tile_size was removed", "model.img_size")
