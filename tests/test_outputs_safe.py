"""No verb destroys a user's file: an output replaces only an earlier output of its kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from sam4em.data.manifest import manifest_sha256
from tests.conftest import assert_user_error, run_cli, write_config
from tests.test_fetch_demo import _fake_repo


def _user_data(tmp: Path) -> tuple[Path, dict]:
    """A raw TIFF folder and a label TIFF, as a lab keeps them."""
    rng = np.random.default_rng(0)
    raw = tmp / "lab" / "raw"
    raw.mkdir(parents=True)
    for z in range(4):
        tifffile.imwrite(raw / f"{z:02d}.tif", rng.integers(0, 255, (48, 48), np.uint8))
    labels = tmp / "lab" / "mito.tif"
    mask = (rng.random((4, 48, 48)) > 0.7).astype(np.uint8)
    tifffile.imwrite(labels, mask, photometric="minisblack")
    dataset = {
        "raw": str(raw),
        "labels": {"masks": {"mito": str(labels)}},
        "voxel_size": [30, 5, 5],
        "split": {"train": [0, 2], "val": [3, 3]},
    }
    return tmp / "lab", dataset


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _import(cfg: Path, out: Path):
    return run_cli("import", "--config", str(cfg), "--dataset", "d", "--out", str(out))


def test_import_never_replaces_an_input_or_a_foreign_folder(tmp_path):
    lab, dataset = _user_data(tmp_path)
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset})
    before = _snapshot(lab)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me\n")
    for target, fragment in (
        (lab / "raw", "would overwrite the input"),  # the raw folder itself
        (lab / "mito.tif", "would overwrite the input"),  # a label file
        (lab, "would overwrite the input"),  # a folder that contains the inputs
        (lab / "raw" / "volume.zarr", "would overwrite the input"),  # inside an input
        (other, "is not a sam4em volume store"),  # someone else's folder
    ):
        assert_user_error(_import(cfg, target), str(target), fragment)
    assert _snapshot(lab) == before
    assert (other / "todo.txt").read_text() == "keep me\n"
    # an earlier volume store is ours to replace
    out = tmp_path / "volume.zarr"
    for _ in range(2):
        r = _import(cfg, out)
        assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob("*.partial-*"))


def test_tile_never_replaces_the_volume_or_a_foreign_store(tmp_path):
    _, dataset = _user_data(tmp_path)
    model = {"img_size": 32, "memory": {"slots": 2}}
    cfg = write_config(tmp_path / "c.yaml", {"d": dataset}, tiling={"sequence_length": 3,
                       "stride": 24}, model=model)  # fmt: skip
    vol = tmp_path / "volume.zarr"
    assert _import(cfg, vol).returncode == 0

    def tile(out: Path):
        return run_cli("tile", "--config", str(cfg), "--dataset", "d", "--split", "train",
                       "--volume", str(vol), "--out", str(out))  # fmt: skip

    assert_user_error(tile(vol), "would overwrite the input")
    assert_user_error(tile(vol / "raw"), "would overwrite the input")
    other = tmp_path / "val.zarr"
    assert _import(cfg, other).returncode == 0  # a sam4em store, but not a tile store
    assert_user_error(tile(other), "is not a sam4em tile store")
    assert (vol / "zarr.json").is_file() and (other / "raw").is_dir()
    for _ in range(2):
        r = tile(tmp_path / "train.zarr")
        assert r.returncode == 0, r.stderr


def test_fetch_demo_never_replaces_the_local_copy_or_a_foreign_folder(tmp_path):
    src = _fake_repo(tmp_path / "src")
    sha = manifest_sha256(src, ["stack1", "stack2"])

    def fetch(dest: Path):
        return run_cli("fetch-demo", "--dest", str(dest), "--local", str(src), "--sha256", sha)

    assert_user_error(fetch(src), "would overwrite the input")
    assert_user_error(fetch(src / "stack1"), "would overwrite the input")
    mine = tmp_path / "mine"
    (mine / "stack1").mkdir(parents=True)
    (mine / "stack1" / "notes.txt").write_text("keep me\n")
    assert_user_error(fetch(mine), "is not a sam4em demo folder")
    assert (mine / "stack1" / "notes.txt").read_text() == "keep me\n"
    assert manifest_sha256(src, ["stack1", "stack2"]) == sha
    for _ in range(2):  # a demo folder it wrote before is replaced
        r = fetch(tmp_path / "demo")
        assert r.returncode == 0, r.stderr
        assert manifest_sha256(tmp_path / "demo", ["stack1", "stack2"]) == sha
