"""Block-wise connected components equal cc3d on the whole volume (same partition)."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sam4em.postprocess.block_components import blockwise_components
from sam4em.postprocess.cleanup import Cleanup, cleaned_reader
from sam4em.postprocess.instances import with_physical_units
from sam4em.postprocess.neighbours import half_offsets
from sam4em.postprocess.object_measures import MEASURES
from sam4em.postprocess.settings import ComponentSettings
from sam4em.predict.pred_store import binary_entropy


def run(mask: np.ndarray, block, connectivity, **filters):
    scratch = np.zeros(mask.shape, np.uint64)
    out = np.zeros(mask.shape, np.uint32)
    table = blockwise_components(
        lambda box: mask[box.slices()], mask.shape, block, connectivity, scratch, out, **filters
    )
    return out, table


def assert_same_partition(a: np.ndarray, b: np.ndarray) -> None:
    """Same background, and a one-to-one map between the labels of a and b."""
    np.testing.assert_array_equal(a == 0, b == 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]], axis=1), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


@st.composite
def cases(draw):
    shape = tuple(draw(st.integers(1, 14)) for _ in range(3))
    block = tuple(draw(st.integers(1, 8)) for _ in range(3))
    density = draw(st.floats(0.05, 0.6))
    seed = draw(st.integers(0, 2**31))
    mask = np.random.default_rng(seed).random(shape) < density
    return mask, block, draw(st.sampled_from([6, 18, 26]))


@settings(max_examples=250, deadline=None)
@given(cases())
def test_blockwise_equals_whole_volume_cc3d(case):
    mask, block, connectivity = case
    out, table = run(mask, block, connectivity)
    whole, n = cc3d.connected_components(
        mask.astype(np.uint8), connectivity=connectivity, return_N=True
    )
    assert_same_partition(out, whole)
    assert len(table) == n == out.max()
    np.testing.assert_array_equal(np.sort(table["voxels"]), np.sort(np.bincount(whole.ravel())[1:]))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_an_object_snaking_through_many_blocks_stays_one(connectivity):
    mask = np.zeros((12, 30, 30), bool)
    # a path that winds back and forth in y, steps in x and climbs in z
    z = 0
    for x in range(1, 29, 3):
        mask[z, 1:29, x] = True
        mask[z, 28 if (x // 3) % 2 == 0 else 1, x : x + 4] = True
        z = min(z + 1, 11)
        mask[z, :, x + 3 : x + 4] |= mask[z - 1, :, x + 3 : x + 4]
    whole, n = cc3d.connected_components(
        mask.astype(np.uint8), connectivity=connectivity, return_N=True
    )
    out, table = run(mask, (3, 4, 5), connectivity)
    assert n == 1  # it is one object
    assert_same_partition(out, whole)
    assert len(table) == n


def test_diagonal_contact_across_block_corners():
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touch only through a corner
    for connectivity, expected in ((6, 2), (18, 2), (26, 1)):
        out, table = run(mask, (1, 1, 1), connectivity)
        assert len(table) == expected, connectivity


def test_filters_and_object_table():
    mask = np.zeros((6, 10, 10), bool)
    mask[0:4, 1:3, 1:3] = True  # 16 voxels over 4 slices
    mask[2, 6:9, 6:9] = True  # 9 voxels, one slice
    mask[5, 0, 9] = True  # 1 voxel
    out, table = run(mask, (2, 5, 5), 26, min_voxels=2, min_z=1)
    assert list(table["voxels"]) == [16, 9]
    out, table = run(mask, (2, 5, 5), 26, min_voxels=2, min_z=2)
    assert list(table["voxels"]) == [16] and out.max() == 1 and (out > 0).sum() == 16
    row = table.iloc[0]
    assert (row.bbox_z0, row.bbox_z1, row.bbox_y0, row.bbox_y1) == (0, 4, 1, 3)
    assert row.centroid_z == pytest.approx(1.5) and row.centroid_x == pytest.approx(1.5)


def _whole_volume_measures(ids: np.ndarray, p: np.ndarray) -> dict[int, dict[str, float]]:
    """The sums of MEASURES per object, computed on the whole volume object by object."""
    mask = np.pad(ids > 0, 1)
    out = {}
    for i in range(1, int(ids.max()) + 1):
        sel = ids == i
        row = {"probability": p[sel].sum(), "entropy": binary_entropy(p[sel]).sum()}
        for axis, name in enumerate("zyx"):
            faces = 0
            for shift in (-1, 1):
                moved = np.roll(mask, shift, axis=axis)[1:-1, 1:-1, 1:-1]
                faces += int((sel & ~moved).sum())
            row[f"faces_{name}"] = faces
        z, y, x = np.nonzero(sel)
        for name, (a, b) in zip(MEASURES[5:], ((z, z), (y, y), (x, x), (z, y), (z, x), (y, x)),
                                strict=True):  # fmt: skip
            row[name] = float((a.astype(float) * b).sum())
        out[i] = row
    return out


@settings(max_examples=150, deadline=None)
@given(cases())
def test_blockwise_object_measures_equal_the_whole_volume(case):
    mask, block, connectivity = case
    p = np.random.default_rng(mask.size).random(mask.shape)
    scratch, out = np.zeros(mask.shape, np.uint64), np.zeros(mask.shape, np.uint32)
    table = blockwise_components(
        lambda box: mask[box.slices()], mask.shape, block, connectivity, scratch, out,
        read_probability=lambda box: p[box.slices()],
    )  # fmt: skip
    whole = _whole_volume_measures(out, p)
    assert len(whole) == len(table)
    for row in table.itertuples():
        for name in MEASURES:
            assert getattr(row, name) == pytest.approx(whole[row.id][name], rel=1e-9), name


def test_object_columns_of_known_shapes():
    ids = np.zeros((6, 20, 20), np.uint32)
    ids[1:5, 2:4, 2:12] = 1  # a 4 x 2 x 10 bar inside the volume
    ids[0, 15, 15] = 2  # one voxel on the volume's first slice
    p = np.full(ids.shape, 0.5)
    p[1:5, 2:4, 2:12] = 0.9
    scratch, out = np.zeros(ids.shape, np.uint64), np.zeros(ids.shape, np.uint32)
    merged = blockwise_components(
        lambda box: ids[box.slices()] > 0, ids.shape, (3, 8, 8), 26, scratch, out,
        read_probability=lambda box: p[box.slices()],
    )  # fmt: skip
    table = with_physical_units(merged, [40.0, 5.0, 5.0], ids.shape)
    assert not set(MEASURES) & set(table.columns)
    bar, dot = table.iloc[0], table.iloc[1]
    assert bar.confidence == pytest.approx(0.9) and dot.confidence == pytest.approx(0.5)
    assert dot.uncertainty == pytest.approx(1.0)  # p = 0.5: one bit
    assert bar.uncertainty == pytest.approx(float(binary_entropy(np.array(0.9))))
    # faces: z 2 x (2 x 10) of 5 x 5 nm, y 2 x (4 x 10) of 40 x 5, x 2 x (4 x 2) of 40 x 5
    assert bar.surface_nm2 == pytest.approx(40 * 25 + 80 * 200 + 16 * 200)
    assert dot.surface_nm2 == pytest.approx(2 * 25 + 4 * 200)
    assert bar.z_extent_nm == 160 and dot.z_extent_nm == 40
    # the bar's voxel centres spread along x (10 voxels of 5 nm) and z (4 of 40 nm)
    var = sorted([(10**2 - 1) / 12 * 25 + 25 / 12, (2**2 - 1) / 12 * 25 + 25 / 12,
                  (4**2 - 1) / 12 * 1600 + 1600 / 12])  # fmt: skip
    assert bar.elongation == pytest.approx(np.sqrt(var[2] / var[0]))
    assert 0 < bar.sphericity < dot.sphericity <= 1
    assert not bar.truncated and dot.truncated


@settings(max_examples=120, deadline=None)
@given(cases(), st.tuples(*[st.integers(0, 2)] * 4))
def test_cleanup_blockwise_equals_cleaning_the_whole_volume(case, radii):
    mask, block, connectivity = case
    cleanup = Cleanup(open_px=radii[:2], close_px=radii[2:])
    scratch = np.zeros(mask.shape, np.uint64)
    out = np.zeros(mask.shape, np.uint32)
    read = cleaned_reader(lambda box: mask[box.slices()], mask.shape, cleanup)
    blockwise_components(read, mask.shape, block, connectivity, scratch, out)
    whole = cc3d.connected_components(cleanup(mask).astype(np.uint8), connectivity=connectivity)
    assert_same_partition(out, whole)


def test_cleanup_removes_specks_fills_holes_and_spares_objects_at_the_edge():
    mask = np.zeros((2, 40, 40), bool)
    mask[:, 10:30, 10:30] = True
    mask[:, 19, 19] = False  # a one-pixel hole
    mask[:, 2, 35] = True  # a speck
    mask[:, 30:40, 0:6] = True  # an object cut by the volume's edge
    cleaned = Cleanup(open_px=(1, 1), close_px=(1, 1))(mask)
    assert cleaned[:, 19, 19].all() and not cleaned[:, 2, 35].any()
    # the opening rounds the corners inside the volume, not the sides on its edge
    np.testing.assert_array_equal(cleaned[:, 31:40, 0:6], True)
    np.testing.assert_array_equal(cleaned[:, 30, 0:5], True)
    np.testing.assert_array_equal(cleaned[:, 11:29, 10:30], True)
    assert cleaned.sum() == 2 * (20 * 20 - 4 + 10 * 6 - 1)
    assert (Cleanup()(mask) == mask).all()
    # radii in nm become pixels per axis; 10 nm at 20 nm pixels is no clean-up
    assert Cleanup.from_nm(open_nm=10, close_nm=9, voxel_nm=(50, 4.6, 2.5)).open_px == (2, 4)
    assert Cleanup.from_nm(open_nm=10, close_nm=10, voxel_nm=(50, 20, 20)).halo == (0, 0, 0)


def test_object_size_defaults_come_from_typical_volumes():
    from sam4em.config import load_config
    from tests.conftest import REPO

    cfg = load_config(REPO / "config" / "config.yaml")
    voxel = (50.0, 4.6, 4.6)  # 1058 nm^3
    mito, glia = (ComponentSettings.from_config(cfg, c) for c in ("mito", "glia"))
    assert mito.min_voxels_for(voxel) == 190 and glia.min_voxels_for(voxel) == 0
    cfg["components"] |= {"min_volume_nm3": {"mito": 1e4}, "min_voxels": 50}
    assert ComponentSettings.from_config(cfg, "mito").min_voxels_for(voxel) == 50
    # a class the map leaves out keeps its typical-size default (1e5 nm^3: 95 voxels)
    assert ComponentSettings.from_config(cfg, "synapse").min_voxels_for(voxel) == 95
    cfg["components"]["min_volume_nm3"] = 1e6
    assert ComponentSettings.from_config(cfg, "glia").min_voxels_for(voxel) == 946


def test_merged_roots_are_the_smallest_member_of_each_object():
    from sam4em.postprocess.union_find import merged_roots

    roots = merged_roots(8, np.array([[5, 2], [2, 7], [3, 4], [7, 5]]))
    np.testing.assert_array_equal(roots, [0, 1, 2, 3, 3, 2, 6, 2, 8])
    np.testing.assert_array_equal(merged_roots(3, np.zeros((0, 2))), [0, 1, 2, 3])


def test_half_offsets_count_each_neighbour_pair_once():
    assert [len(half_offsets(c)) for c in (6, 18, 26)] == [3, 9, 13]
    with pytest.raises(ValueError):
        half_offsets(8)


def test_components_cli_on_a_prediction_store(tmp_path):
    import pandas as pd
    import yaml

    from sam4em.io.zarr_store import open_group
    from sam4em.predict.pred_store import ensure_pred_store, mark_complete, store_identity
    from tests.conftest import assert_user_error, run_cli

    rng = np.random.default_rng(3)
    probs = (rng.random((6, 40, 50)) * 255).astype(np.uint8)
    store = ensure_pred_store(
        tmp_path / "pred.zarr", store_identity(probs.shape, [2, 16, 16], ["mito"]), [50, 5, 4]
    )
    store["mito/0"][...] = probs
    cfg = tmp_path / "config.yaml"
    tif = tmp_path / "raw.tif"
    import tifffile

    tifffile.imwrite(tif, probs, photometric="minisblack")
    cfg.write_text(yaml.safe_dump({
        "classes": ["mito"],
        "datasets": {"d": {"raw": str(tif), "voxel_size": [50, 5, 4]}},
        "inference": {"chunks": [2, 16, 16]},
        "components": {"threshold": {"mito": 0.8}, "connectivity": 6, "block_shape": [2, 16, 16],
                       "min_volume_nm3": 0, "open_nm": 0, "close_nm": 0},
    }))  # fmt: skip
    args = ["components", "--config", str(cfg), "--pred", str(tmp_path / "pred.zarr"),
            "--out", str(tmp_path / "instances.zarr"),
            "--objects", str(tmp_path / "mito.csv")]  # fmt: skip
    assert_user_error(run_cli(*args, "--class", "mito"), "incomplete")  # not stitched yet
    mark_complete(store, {"model": "m", "volume": "v", "blocks": 1})
    r = run_cli(*args, "--class", "mito")
    assert r.returncode == 0, r.stderr
    labels = np.asarray(open_group(tmp_path / "instances.zarr")["mito/0"])
    whole = cc3d.connected_components((probs >= 204).astype(np.uint8), connectivity=6)
    assert_same_partition(labels, whole)
    table = pd.read_csv(tmp_path / "mito.csv")
    assert len(table) == labels.max() > 10
    assert (table["volume_nm3"] == table["voxels"] * 1000).all()
    assert not [p for p in (tmp_path / "instances.zarr").iterdir() if "partial" in p.name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".components")]
    assert_user_error(run_cli(*args, "--class", "glia"), "--class", "glia")
    # one job of the block-wise run, as the workflow calls it
    step = [*args, "--class", "mito", "--work", str(tmp_path / "work")]
    assert_user_error(run_cli(*step, "--step", "label"), "--block")
    r = run_cli(*step, "--step", "label", "--block", "z0y0x0")
    assert r.returncode == 0 and "z0y0x0" in r.stdout, r.stderr
    assert (tmp_path / "work" / "z0y0x0.npz").is_file()
    assert_user_error(run_cli(*step, "--step", "label", "--block", "z9y0x0"), "z9y0x0")


def _prediction(tmp_path, probs, chunks):
    from sam4em.predict.pred_store import ensure_pred_store, store_identity

    store = ensure_pred_store(
        tmp_path / "pred.zarr", store_identity(probs.shape, chunks, ["mito"]), [40, 8, 8]
    )
    store["mito/0"][...] = probs
    return tmp_path / "pred.zarr"


def test_component_jobs_in_any_order_equal_the_whole_volume(tmp_path):
    """The workflow's jobs (each a fresh ComponentJobs, files in between), blocks in a
    shuffled order, give cc3d's partition of the cleaned mask and the one-process run's
    ids and table."""
    import pandas as pd
    from scipy import ndimage

    from sam4em.io.zarr_store import open_group
    from sam4em.postprocess.instances import ComponentJobs, components_for_class

    rng = np.random.default_rng(5)
    smooth = ndimage.gaussian_filter(rng.random((10, 96, 80)), (1, 2, 2))
    probs = np.clip((smooth - np.quantile(smooth, 0.75)) * 4000 + 128, 0, 255).astype(np.uint8)
    pred = _prediction(tmp_path, probs, [2, 16, 16])
    settings = ComponentSettings(connectivity=26, block_shape=(4, 32, 32), threshold=0.5,
                                 close_nm=8.0, min_voxels=3)  # fmt: skip
    out, work = tmp_path / "jobs.zarr", tmp_path / "work"

    def jobs():
        return ComponentJobs(settings, pred, "mito", out, work)

    ids = [name for name, _, _ in jobs().blocks()]
    assert len(ids) == 3 * 3 * 3
    for step in ("label", "contacts"):
        for i in rng.permutation(len(ids)):
            getattr(jobs(), step)(ids[i])
    jobs().merge()
    for i in rng.permutation(len(ids)):
        jobs().relabel(ids[i])
    table = jobs().finish(tmp_path / "jobs.csv")
    labels = np.asarray(open_group(out)["mito/0"])
    cleaned = settings.cleanup([40, 8, 8])(probs >= 128)
    whole = cc3d.connected_components(cleaned.astype(np.uint8), connectivity=26)
    sizes = np.bincount(whole.ravel())
    whole[sizes[whole] < 3] = 0  # the size filter
    assert_same_partition(labels, whole)
    assert len(table) == labels.max() > 5
    one = components_for_class(settings, pred, "mito", tmp_path / "one.zarr", tmp_path / "one.csv")
    np.testing.assert_array_equal(np.asarray(open_group(tmp_path / "one.zarr")["mito/0"]), labels)
    pd.testing.assert_frame_equal(one, table)
    assert open_group(out)["mito"].attrs["sam4em"]["objects"] == len(table)
    assert not list(out.glob("mito.partial-*"))


def test_component_blocks_must_be_whole_chunks(tmp_path):
    from sam4em.errors import InputDataError
    from sam4em.postprocess.instances import ComponentJobs

    pred = _prediction(tmp_path, np.zeros((4, 32, 32), np.uint8), [2, 16, 16])
    settings = ComponentSettings(connectivity=6, block_shape=(4, 24, 32), threshold=0.5)
    with pytest.raises(InputDataError, match="y size 24 is not a multiple"):
        ComponentJobs(settings, pred, "mito", tmp_path / "i.zarr", tmp_path / "w")


def test_relabel_jobs_write_the_viewer_levels_of_their_blocks(tmp_path):
    """Relabel jobs write level 0 and the levels their blocks cover in whole chunks a
    z chunk at a time; the result is the 2 x 2 mode pyramid of the finished labels."""
    from scipy import ndimage

    from sam4em.io.pyramid import block_pyramid, halve
    from sam4em.io.zarr_store import open_group
    from sam4em.postprocess.instances import components_for_class

    rng = np.random.default_rng(8)
    smooth = ndimage.gaussian_filter(rng.random((4, 1100, 600)), (0.5, 4, 4))
    probs = ((smooth > np.quantile(smooth, 0.6)) * 255).astype(np.uint8)
    pred = _prediction(tmp_path, probs, [2, 64, 64])
    settings = ComponentSettings(connectivity=26, block_shape=(4, 512, 512), threshold=0.5)
    assert block_pyramid(probs.shape, (2, 64, 64), (4, 512, 512))[1] == [1, 2, 4]
    components_for_class(settings, pred, "mito", tmp_path / "i.zarr", tmp_path / "m.csv")
    group = open_group(tmp_path / "i.zarr")["mito"]
    expected = np.asarray(group["0"])
    assert expected.max() > 20
    for level in ("1", "2"):
        expected = halve(expected, "mode")
        np.testing.assert_array_equal(np.asarray(group[level]), expected, err_msg=level)
