"""Import of the real VNC stack 1 through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tests.conftest import run_cli, vnc_dataset, write_config

EXPECTED_FRACTIONS = {"glia": 0.029, "mito": 0.054, "synapse": 0.0056}


@pytest.fixture(scope="module")
def vnc_volume(tmp_path_factory, vnc):
    tmp = tmp_path_factory.mktemp("vnc")
    cfg = write_config(
        tmp / "config.yaml",
        {"vnc": vnc_dataset(vnc)},
    )
    out = tmp / "volume.zarr"
    result = run_cli("import", "--config", str(cfg), "--dataset", "vnc", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_vnc_raw_shape_and_dtype(vnc_volume, vnc):
    root = zarr.open_group(str(vnc_volume), mode="r")
    raw = root["raw"]
    assert raw.shape == (20, 1024, 1024)
    assert raw.dtype == np.uint8
    assert root.metadata.zarr_format == 3
    # the first slice is the first file, read unchanged
    import tifffile

    first = tifffile.imread(sorted((vnc / "stack1" / "raw").glob("*.tif"))[0])
    np.testing.assert_array_equal(raw[0], first)


def test_vnc_class_fractions(vnc_volume):
    root = zarr.open_group(str(vnc_volume), mode="r")
    for cls, expected in EXPECTED_FRACTIONS.items():
        frac = float(np.asarray(root["labels"][cls]["0"]).mean())
        assert frac == pytest.approx(expected, rel=0.06), cls
        assert set(np.unique(root["labels"][cls]["0"][0])) <= {0, 1}
    assert root.attrs["sam4em"]["label_fractions"]["synapse"] == pytest.approx(0.0056, rel=0.06)


def test_vnc_ome_ngff_metadata(vnc_volume):
    root = zarr.open_group(str(vnc_volume), mode="r")
    ome = root.attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["path"] == "raw"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 4.6, 4.6]
    assert root["raw"].metadata.dimension_names == ("z", "y", "x")
