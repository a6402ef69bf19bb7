"""Bad input gives one clear line, exit status 2, nothing that looks complete, and no
input file changed: every case runs the CLI as a user would (with ``-q``, so stderr
holds nothing but the error) and hashes every file under the test folder before and
after."""

from __future__ import annotations

import hashlib
import json
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


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _fails(root: Path, *args: str, fragments=(), cwd: Path | None = None):
    """Run ``sam4em -q ARGS``: exit 2, stderr exactly one line holding ``fragments``, and
    every file that was under ``root`` before is still there, unchanged."""
    before = _hashes(root)
    result = run_cli("-q", *args, cwd=cwd)
    assert_user_error(result, *fragments)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    after = _hashes(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, f"inputs changed or removed: {changed}"
    return result


def _import(tmp: Path, dataset: dict, name: str = "d", *fragments: str):
    cfg = write_config(tmp / "config.yaml", {name: {"voxel_size": [1, 1, 1], **dataset}})
    out = tmp / "out" / "volume.zarr"
    result = _fails(tmp, "import", "--config", str(cfg), "--dataset", name, "--out", str(out),
                    fragments=fragments)  # fmt: skip
    leftovers = list((tmp / "out").glob("*")) if (tmp / "out").exists() else []
    assert leftovers == [], f"something was left behind: {leftovers}"
    return result


def _volume(tmp: Path, classes=("mito",), **extra) -> tuple[Path, Path]:
    """(config, volume.zarr) of a small imported TIFF stack with a mito mask."""
    dataset = {"raw": _tiff(tmp / "r.tif", (4, 64, 64)), "voxel_size": [40, 8, 8],
               "labels": {"masks": {"mito": _tiff(tmp / "m.tif", (4, 64, 64))}},
               "split": {"train": [0, 1], "val": [2, 2], "test": [3, 3]}}  # fmt: skip
    cfg = write_config(tmp / "c.yaml", {"d": dataset}, classes=list(classes), **extra)
    vol = tmp / "volume.zarr"
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(vol))
    assert r.returncode == 0, r.stderr
    return cfg, vol


def test_truncated_tiff(tmp_path):
    path = Path(_tiff(tmp_path / "stack.tif", (6, 64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    r = _import(tmp_path, {"raw": str(path)}, "d", "datasets.d.raw", "stack.tif")
    assert "tifffile" not in r.stderr  # its own ERROR log line does not precede ours


def test_png_folder_with_differing_sizes(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, size in enumerate([(32, 32), (32, 32), (40, 32)]):
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(folder / f"{z}.png")
    _import(tmp_path, {"raw": str(folder)}, "d", "slices differ in size", "2.png")


def test_slice_folder_mixing_8_and_16_bit_slices(tmp_path):
    """Mixed depths would be scaled by the 16-bit range (the 8-bit slices almost black):
    one line naming the first slice of the other type, never a silent rescale."""
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, dtype in enumerate([np.uint8, np.uint8, np.uint16, np.uint8]):
        tifffile.imwrite(folder / f"s{z:02d}.tif", np.full((32, 32), 100, dtype))
    _import(tmp_path, {"raw": str(folder)}, "d", "differ in pixel type", "s02.tif is uint16")


def test_label_shape_mismatch(tmp_path):
    raw = _tiff(tmp_path / "raw.tif", (4, 32, 32))
    labels = _tiff(tmp_path / "labels.tif", (4, 32, 30))
    dataset = {"raw": raw, "labels": {"source": labels, "values": {"mito": 1}}}
    _import(tmp_path, dataset, "d", "datasets.d.labels.source", "does not match the raw volume")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "._0.tif").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    _import(tmp_path, {"raw": str(tmp_path / "empty")}, "d", "datasets.d.raw", "no .tif")


def test_missing_raw_file(tmp_path):
    _import(tmp_path, {"raw": str(tmp_path / "nope.tif")}, "d", "datasets.d.raw", "no such file")


def test_hdf5_dataset_that_does_not_exist(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh.create_dataset("raw", data=np.zeros((2, 8, 8), np.uint8))
    dataset = {"raw": f"{tmp_path / 'v.h5'}:/volumes/missing"}
    _import(tmp_path, dataset, "d", "datasets.d.raw", "no such dataset", "in the file: raw")


def test_hdf5_file_without_a_dataset_path(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh["raw"] = np.zeros((4, 16, 16), np.uint8)
    fragments = ("datasets.d.raw", "dataset path inside the HDF5 file is missing")
    _import(tmp_path, {"raw": str(tmp_path / "v.h5")}, "d", *fragments)


def test_hdf5_file_with_damaged_data(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as fh:
        fh.create_dataset("raw", data=np.ones((4, 64, 64), np.uint8), chunks=(1, 64, 64),
                          compression="gzip")  # fmt: skip
        offset = fh["raw"].id.get_chunk_info(2).byte_offset
    data = bytearray((tmp_path / "v.h5").read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    (tmp_path / "v.h5").write_bytes(bytes(data))
    fragments = ("datasets.d.raw", "cannot read slices", "damaged or truncated")
    _import(tmp_path, {"raw": f"{tmp_path / 'v.h5'}:/raw"}, "d", *fragments)


def test_zarr_input_with_a_damaged_chunk(tmp_path):
    import zarr

    array = zarr.create_array(tmp_path / "in.zarr", shape=(4, 32, 32), chunks=(1, 32, 32),
                              dtype="uint8")  # fmt: skip
    array[:] = 7
    (tmp_path / "in.zarr" / "c" / "2" / "0" / "0").write_bytes(b"not zstd at all")
    fragments = ("datasets.d.raw", "in.zarr", "cannot read slices")
    _import(tmp_path, {"raw": str(tmp_path / "in.zarr")}, "d", *fragments)


def test_split_outside_volume(tmp_path):
    raw = _tiff(tmp_path / "raw.tif", (4, 16, 16))
    labels = _tiff(tmp_path / "lab.tif", (4, 16, 16))
    dataset = {"raw": raw, "labels": {"source": labels, "values": {"mito": 1}},
               "split": {"train": [0, 2], "test": [3, 7]}}  # fmt: skip
    _import(tmp_path, dataset, "d", "datasets.d.split.test", "outside the volume", "4 slices")


def test_unknown_dataset_name(tmp_path):
    cfg = write_config(tmp_path / "config.yaml", {"d": {"raw": "r.tif", "voxel_size": [1, 1, 1]}})
    _fails(tmp_path, "import", "--config", str(cfg), "--dataset", "nope", "--out",
           str(tmp_path / "x"), fragments=("datasets.nope", "configured: d"))  # fmt: skip


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
        (
            lambda c: c.update(components={"min_volume_nm3": {"mitos": 1e5}}),
            ["components.min_volume_nm3", "unknown class 'mitos'"],
        ),
        (
            lambda c: c.update(components={"open_nm": -5}),
            ["components.open_nm", "-5"],
        ),
        (
            lambda c: c.update(classes=[]),
            ["classes", "[]"],
        ),
        (
            lambda c: c["datasets"]["d"].update(z_index="names"),
            ["datasets.d.z_index", "'names' is not one of the forms: auto, consecutive"],
        ),
        (
            lambda c: c["datasets"]["d"].update(voxel_size=[50, 0, 4]),
            ["datasets.d.voxel_size", "0"],
        ),
        (  # found by building the analysis settings, before any work starts
            lambda c: c.update(analysis={"contacts": [["synapse", "astrocyte"]]}),
            ["analysis.contacts", "'astrocyte' is not one of"],
        ),
        (
            lambda c: c.update(analysis={"distances": [["mito"]]}),
            ["analysis.distances", "['mito']"],
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
        "size-filter-class",
        "negative-radius",
        "no-classes",
        "z-index-form",
        "zero-voxel",
        "analysis-class",
        "analysis-pair",
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
    _fails(tmp_path, "check-config", "--config", str(path), fragments=(str(path), *fragments))


def test_config_not_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [unclosed\n")
    _fails(tmp_path, "check-config", "--config", str(path), fragments=("not valid YAML", "line"))


def test_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes("classes: [glia]\n# caf\xe9\n".encode("latin-1"))
    _fails(tmp_path, "check-config", "--config", str(path), fragments=(str(path), "not UTF-8"))


def test_no_config_outside_the_project_says_where_it_looked(tmp_path):
    _fails(tmp_path, "check-config", cwd=tmp_path,
           fragments=("no --config given", "config/config.yaml", str(tmp_path)))  # fmt: skip


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
    _import(tmp_path, {"raw": str(tmp_path / "nan.tif")}, "d", "datasets.d.raw", "no finite")


def test_label_value_that_does_not_occur(tmp_path):
    raw = _tiff(tmp_path / "raw.tif")
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, :8] = 191
    labels[:, 8:12] = 223
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    dataset = {"raw": raw, "labels": {"source": str(tmp_path / "labels.tif"),
               "values": {"mito": 190, "synapse": 223}}}  # fmt: skip
    _import(tmp_path, dataset, "d", "datasets.d.labels.values.mito", "190", "are 0, 191, 223")


def test_hidden_and_appledouble_files_are_not_slices(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(3):
        Image.fromarray(np.full((16, 16), z, np.uint8)).save(folder / f"{z}.png")
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (folder / ".thumb.tif").write_bytes(b"not a tiff")
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": str(folder), "voxel_size": [1, 1, 1]}})
    out = tmp_path / "volume.zarr"
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out))
    assert r.returncode == 0, r.stderr
    import zarr

    assert zarr.open_group(str(out))["raw"].shape == (3, 16, 16)


def test_stores_of_the_wrong_kind_or_missing_are_one_line_errors(tmp_path):
    from sam4em.predict.pred_store import ensure_pred_store, mark_complete, store_identity

    cfg, vol = _volume(tmp_path, classes=("mito", "glia"))  # glia configured, not predicted
    pred = tmp_path / "pred.zarr"
    store = ensure_pred_store(pred, store_identity((4, 64, 64), (1, 64, 64), ["mito"]), [1, 1, 1])

    def components(store: Path, *fragments: str, cls: str = "mito"):
        out = ["--out", str(tmp_path / "i.zarr"), "--objects", str(tmp_path / "o.csv")]
        _fails(tmp_path, "components", "--config", str(cfg), "--pred", str(store),
               "--class", cls, *out, fragments=fragments)  # fmt: skip

    components(tmp_path / "absent.zarr", "not found", "prediction store")
    components(vol, "not a sam4em prediction store", "predict-block")  # another kind
    components(pred, "prediction is incomplete", "stitch first")
    mark_complete(store, {"model": "m", "volume": "v", "blocks": 1})
    components(pred, "has no class 'glia'", "it holds mito", cls="glia")
    _fails(tmp_path, "report", "--config", str(cfg), "--dataset", "d", "--results",
           str(tmp_path), "--out", str(tmp_path / "r.html"), "--figures", str(tmp_path / "f"),
           fragments=("eval/metrics.csv", "steps before the report first"))  # fmt: skip
    _fails(tmp_path, "tile", "--config", str(cfg), "--dataset", "d", "--split", "train",
           "--volume", str(pred), "--out", str(tmp_path / "t.zarr"),
           fragments=("not a sam4em volume store",))  # fmt: skip
    _fails(tmp_path, "evaluate", "--config", str(cfg), "--dataset", "d", "--volume", str(vol),
           "--pred", str(pred), "--instances", str(tmp_path / "none.zarr"),
           "--out-dir", str(tmp_path / "e"), fragments=("none.zarr", "not found"))  # fmt: skip


def _predict_block(tmp: Path, cfg: Path, vol: Path, checkpoint: Path, plan: Path, *fragments):
    _fails(tmp, "predict-block", "--config", str(cfg), "--checkpoint", str(checkpoint),
           "--volume", str(vol), "--plan", str(plan), "--block", "z0y0x0",
           "--out", str(tmp / "pred.zarr"), fragments=fragments)  # fmt: skip
    assert not (tmp / "pred.zarr").exists() and not (tmp / "blocks").exists()


_SMALL = {"inference": {"block_shape": [4, 64, 64], "chunks": [1, 64, 64]},
          "model": {"img_size": 64}, "tiling": {"stride": 32}}  # fmt: skip


def _with_plan(tmp: Path) -> tuple[Path, Path, Path]:
    cfg, vol = _volume(tmp, **_SMALL)
    plan = tmp / "blocks.json"
    r = run_cli("plan-blocks", "--config", str(cfg), "--volume", str(vol), "--out", str(plan))
    assert r.returncode == 0, r.stderr
    return cfg, vol, plan


def _two_axes(plan: dict) -> str:
    plan["blocks"][0]["index"] = [0, 0]
    return json.dumps(plan)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (None, ["blocks.json", "block plan not found", "plan-blocks"]),
        (lambda plan: "{not json", ["blocks.json", "not a block plan"]),
        (lambda plan: '{"blocks": []}', ["blocks.json", "not a block plan", "KeyError"]),
        (_two_axes, ["blocks.json", "index must be three integers"]),
    ],
    ids=["missing", "not-json", "no-geometry", "two-axes"],
)
def test_block_plan_missing_or_garbage(tmp_path, edit, fragments):
    cfg, vol, plan = _with_plan(tmp_path)
    text = plan.read_text()
    plan.unlink()
    if edit is not None:
        plan.write_text(edit(json.loads(text)))
    ckpt = tmp_path / "stage2.pt"
    ckpt.write_bytes(b"placeholder: the plan is checked first")
    _predict_block(tmp_path, cfg, vol, ckpt, plan, *fragments)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [(None, ["stage2.pt", "not found"]), (b"garbage, not a checkpoint", ["stage2.pt"])],
    ids=["missing", "garbage"],
)
def test_checkpoint_missing_or_garbage(tmp_path, content, fragments):
    cfg, vol, plan = _with_plan(tmp_path)
    ckpt = tmp_path / "stage2.pt"
    if content is not None:
        ckpt.write_bytes(content)
    _predict_block(tmp_path, cfg, vol, ckpt, plan, *fragments)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("htp:/x.zip", "not a download URL"), ("no url", "not a download URL"),
     ("http://", "download failed")],
    ids=["scheme-typo", "no-scheme", "no-host"],
)  # fmt: skip
def test_malformed_demo_url(tmp_path, url, fragment):
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": "r.tif", "voxel_size": [1, 1, 1]}})
    _fails(tmp_path, "fetch-demo", "--config", str(cfg), "--dest", str(tmp_path / "demo"),
           "--local", str(tmp_path / "no-copy"), "--url", url,
           fragments=(url, fragment))  # fmt: skip
    assert not (tmp_path / "demo").exists()


def test_output_folder_the_file_system_refuses(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be\n")
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": _tiff(tmp_path / "r.tif"),
                       "voxel_size": [1, 1, 1]}})  # fmt: skip
    out = tmp_path / "taken" / "volume.zarr"
    _fails(tmp_path, "import", "--config", str(cfg), "--dataset", "d", "--out", str(out),
           fragments=(str(tmp_path / "taken"),))  # fmt: skip


def test_quiet_hides_progress_bars(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": _tiff(tmp_path / "r.tif"),
                       "voxel_size": [1, 1, 1]}})  # fmt: skip
    args = ["import", "--config", str(cfg), "--dataset", "d"]
    loud = run_cli(*args, "--out", str(tmp_path / "a.zarr"))
    quiet = run_cli("-q", *args, "--out", str(tmp_path / "b.zarr"))
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "slab" in loud.stderr and quiet.stderr == ""


def test_leftovers_of_a_killed_run_are_removed_by_the_next(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"d": {"raw": _tiff(tmp_path / "r.tif"),
                       "voxel_size": [1, 1, 1]}})  # fmt: skip
    stale = tmp_path / "volume.zarr.partial-0badc0de"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    r = run_cli("import", "--config", str(cfg), "--dataset", "d", "--out",
                str(tmp_path / "volume.zarr"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "r.tif", "volume.zarr"]
