"""Bad input gives one clear line, exit status 2, and nothing that looks complete."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from tests.conftest import assert_user_error, run_cli, write_config


def _tiff(path: Path, shape=(4, 32, 32)) -> str:
    tifffile.imwrite(
        path,
        np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8),
        photometric="minisblack",
    )
    return str(path)


def _import(tmp: Path, dataset: dict, name: str = "d"):
    cfg = write_config(tmp / "config.yaml", {name: {"voxel_size": [1, 1, 1], **dataset}})
    out = tmp / "out" / "volume.zarr"
    result = run_cli("import", "--config", str(cfg), "--dataset", name, "--out", str(out))
    leftovers = list((tmp / "out").glob("*")) if (tmp / "out").exists() else []
    assert leftovers == [], f"something was left behind: {leftovers}"
    return result


def test_truncated_tiff(tmp_path):
    path = Path(_tiff(tmp_path / "stack.tif", (6, 64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    result = _import(tmp_path, {"raw": str(path)})
    assert_user_error(result, "datasets.d.raw", "stack.tif")


def test_png_folder_with_differing_sizes(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, size in enumerate([(32, 32), (32, 32), (40, 32)]):
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(folder / f"{z}.png")
    result = _import(tmp_path, {"raw": str(folder)})
    assert_user_error(result, "slices differ in size", "2.png")


def test_label_shape_mismatch(tmp_path):
    raw = _tiff(tmp_path / "raw.tif", (4, 32, 32))
    labels = _tiff(tmp_path / "labels.tif", (4, 32, 30))
    result = _import(tmp_path, {"raw": raw, "labels": {"source": labels, "values": {"mito": 1}}})
    assert_user_error(result, "datasets.d.labels.source", "does not match the raw volume")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _import(tmp_path, {"raw": str(tmp_path / "empty")})
    assert_user_error(result, "datasets.d.raw", "no .tif, .tiff or .png slices")


def test_missing_raw_file(tmp_path):
    result = _import(tmp_path, {"raw": str(tmp_path / "nope.tif")})
    assert_user_error(result, "datasets.d.raw", "no such file or folder")


def test_hdf5_dataset_that_does_not_exist(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh.create_dataset("raw", data=np.zeros((2, 8, 8), np.uint8))
    result = _import(tmp_path, {"raw": f"{tmp_path / 'v.h5'}:/volumes/missing"})
    assert_user_error(result, "datasets.d.raw", "no such dataset", "datasets in the file: raw")


def test_split_outside_volume(tmp_path):
    raw = _tiff(tmp_path / "raw.tif", (4, 16, 16))
    labels = _tiff(tmp_path / "lab.tif", (4, 16, 16))
    result = _import(
        tmp_path,
        {
            "raw": raw,
            "labels": {"source": labels, "values": {"mito": 1}},
            "split": {"train": [0, 2], "test": [3, 7]},
        },
    )
    assert_user_error(result, "datasets.d.split.test", "outside the volume", "4 slices")


def test_unknown_dataset_name(tmp_path):
    cfg = write_config(tmp_path / "config.yaml", {"d": {"raw": "r.tif", "voxel_size": [1, 1, 1]}})
    result = run_cli(
        "import", "--config", str(cfg), "--dataset", "nope", "--out", str(tmp_path / "x")
    )
    assert_user_error(result, "datasets.nope", "configured: d")


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda c: c.update(tilng={"tile_size": 64}), ["(top level)", "'tilng' was unexpected"]),
        (lambda c: c["datasets"]["d"].update(voxel_sise=[1, 1, 1]), ["datasets.d", "voxel_sise"]),
        (lambda c: c["datasets"]["d"].update(voxel_size="4nm"), ["datasets.d.voxel_size", "'4nm'"]),
        (lambda c: c.update(tiling={"stride": "big"}), ["tiling.stride", "'big'"]),
        (
            lambda c: c["datasets"]["d"].update(labels={"source": "x.tif", "values": {"mitos": 1}}),
            ["datasets.d.labels", "'mitos' is not in classes"],
        ),
        (
            lambda c: c["datasets"]["d"].update(
                labels={"source": "x.tif", "values": {"mito": 1}},
                split={"train": [0, 5], "test": [4, 8]},
            ),
            ["datasets.d.split", "train and test overlap at slices 4-5"],
        ),
        (
            lambda c: c.update(inference={"block_shape": [8, 500, 512], "chunks": [1, 256, 256]}),
            ["inference.block_shape", "not a multiple"],
        ),
        (
            lambda c: c["datasets"]["d"].pop("voxel_size"),
            ["datasets.d", "'voxel_size' is a required"],
        ),
        (
            lambda c: c.update(tiling={"sequence_length": 4}),
            ["tiling.sequence_length", "below model.memory.slots + 1 = 5"],
        ),
        (
            lambda c: c.update(
                model={"conv_stem": True, "checkpoint": "sam_vit_b.pth", "preset": "vit_b"}
            ),  # fmt: skip
            ["model.conv_stem", "random-initialised"],
        ),
        (  # found only by building the model's settings: refused before any work starts
            lambda c: c.update(model={"memory": {"heads": 3}}),
            ["model.memory.heads", "does not divide"],
        ),
        (  # JSON Schema would take 32.0 as an integer; the code downstream would not
            lambda c: c.update(tiling={"stride": 32.0}),
            ["tiling.stride", "32.0 is not of type 'integer'"],
        ),
    ],
    ids=[
        "top-typo",
        "dataset-typo",
        "wrong-type",
        "tiling-type",
        "class",
        "overlap",
        "align",
        "missing",
        "short-sequences",
        "conv-stem-with-weights",
        "stage-settings",
        "float-integer",
    ],
)
def test_config_errors(tmp_path, edit, fragments):
    import yaml

    config = {
        "classes": ["glia", "mito", "synapse"],
        "datasets": {"d": {"raw": "r.tif", "voxel_size": [1, 1, 1]}},
    }
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check-config", "--config", str(path))
    assert_user_error(result, str(path), *fragments)


def test_config_not_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [unclosed\n")
    assert_user_error(run_cli("check-config", "--config", str(path)), "not valid YAML", "line")


def test_default_config_is_valid(repo):
    result = run_cli("check-config", "--config", str(repo / "config" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_float_raw_with_an_infinity_keeps_its_contrast(tmp_path):
    raw = np.random.default_rng(1).random((4, 32, 32)).astype(np.float32)
    raw[0, 0, 0] = np.inf
    raw[1, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "f.tif", raw, photometric="minisblack")
    cfg = write_config(
        tmp_path / "c.yaml", {"d": {"voxel_size": [1, 1, 1], "raw": str(tmp_path / "f.tif")}}
    )
    out = tmp_path / "volume.zarr"
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out))
    assert r.returncode == 0, r.stderr
    import zarr

    got = np.asarray(zarr.open_group(str(out))["raw"])
    assert got[0, 0, 0] == 255 and got[1, 0, 0] == 0  # inf to the top, NaN to 0
    finite = np.isfinite(raw)
    values = raw[finite].astype(np.float64)
    expected = np.round((values - values.min()) * (255.0 / np.ptp(values)))
    np.testing.assert_array_equal(got[finite], expected.astype(np.uint8))


def test_raw_without_a_finite_value(tmp_path):
    nan = np.full((4, 16, 16), np.nan, np.float32)
    tifffile.imwrite(tmp_path / "nan.tif", nan, photometric="minisblack")
    result = _import(tmp_path, {"raw": str(tmp_path / "nan.tif")})
    assert_user_error(result, "datasets.d.raw", "no finite intensity")


def test_label_value_that_does_not_occur(tmp_path):
    raw = _tiff(tmp_path / "raw.tif")
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, :8] = 191
    labels[:, 8:12] = 223
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    dataset = {"raw": raw, "labels": {"source": str(tmp_path / "labels.tif"),
               "values": {"mito": 190, "synapse": 223}}}  # fmt: skip
    result = _import(tmp_path, dataset)
    assert_user_error(result, "datasets.d.labels.values.mito", "190", "are 0, 191, 223")


def test_stores_of_the_wrong_kind_or_missing_are_one_line_errors(tmp_path):
    from sam4em.predict.pred_store import ensure_pred_store, mark_complete, store_identity

    dataset = {"raw": _tiff(tmp_path / "r.tif"), "voxel_size": [1, 1, 1],
               "labels": {"masks": {"mito": _tiff(tmp_path / "m.tif")}},
               "split": {"test": [0, 3]}}  # fmt: skip
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset})
    vol = tmp_path / "volume.zarr"
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(vol))
    assert r.returncode == 0, r.stderr
    pred = tmp_path / "pred.zarr"
    store = ensure_pred_store(pred, store_identity((4, 32, 32), (1, 32, 32), ["mito"]), [1, 1, 1])

    def components(store: Path, cls: str = "mito"):
        out = ["--out", str(tmp_path / "i.zarr"), "--objects", str(tmp_path / "o.csv")]
        return run_cli("components", "--config", str(cfg), "--pred", str(store), "--class", cls,
                       *out)  # fmt: skip

    for given, fragments in (
        (tmp_path / "absent.zarr", ["not found", "prediction store"]),
        (vol, ["not a sam4em prediction store", "predict-block"]),  # a store of another kind
    ):
        r = components(given)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert all(f in r.stderr.strip().splitlines()[-1] for f in fragments), r.stderr
    assert_user_error(components(pred), "prediction is incomplete", "stitch first")
    mark_complete(store, {"model": "m", "volume": "v", "blocks": 1})
    assert_user_error(components(pred, "glia"), "has no class 'glia'", "it holds mito")
    r = run_cli("report", "--config", str(cfg), "--dataset", "d", "--results", str(tmp_path),
                "--out", str(tmp_path / "r.html"), "--figures", str(tmp_path / "f"))  # fmt: skip
    assert_user_error(r, "eval/metrics.csv", "run the stitch and evaluate steps first")


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes("classes: [glia]\n# caf\xe9\n".encode("latin-1"))
    assert_user_error(run_cli("check-config", "--config", str(path)), str(path), "not UTF-8")


def test_output_folder_the_file_system_refuses(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be\n")
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": _tiff(tmp_path / "r.tif"),
                       "voxel_size": [1, 1, 1]}})  # fmt: skip
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out",
                str(tmp_path / "taken" / "volume.zarr"))  # fmt: skip
    assert_user_error(r, str(tmp_path / "taken"))
    assert (tmp_path / "taken").read_text().startswith("a file")


def test_hdf5_file_without_a_dataset_path(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh["raw"] = np.zeros((4, 16, 16), np.uint8)
    result = _import(tmp_path, {"raw": str(tmp_path / "v.h5")})
    assert_user_error(result, "datasets.d.raw", "dataset path inside the HDF5 file is missing")
