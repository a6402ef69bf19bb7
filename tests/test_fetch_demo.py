"""fetch-demo: local copies and a real HTTP download, both checked by content checksum."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from sam4em.data.manifest import manifest_sha256
from tests.conftest import assert_user_error, run_cli


def _fake_repo(root: Path) -> Path:
    """A small folder laid out like the VNC repository."""
    rng = np.random.default_rng(0)
    for z in range(3):
        (root / "stack1" / "raw").mkdir(parents=True, exist_ok=True)
        (root / "stack1" / "labels").mkdir(parents=True, exist_ok=True)
        (root / "stack2" / "raw").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(
            root / "stack1" / "raw" / f"{z:02d}.tif", rng.integers(0, 255, (16, 16), np.uint8)
        )
        tifffile.imwrite(
            root / "stack2" / "raw" / f"{z:02d}.tif", rng.integers(0, 255, (16, 16), np.uint8)
        )
        Image.fromarray(rng.choice([159, 191, 223], (16, 16)).astype(np.uint8)).save(
            root / "stack1" / "labels" / f"labels{z:08d}.png"
        )
    (root / "README.md").write_text("fake VNC\n")
    return root


def _zip(src: Path, archive: Path, top: str = "groundtruth-drosophila-vnc-master") -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in src.rglob("*"):
            zf.write(path, f"{top}/{path.relative_to(src)}")


def test_download_with_checksum(tmp_path, http_folder):
    www, url = http_folder
    src = _fake_repo(tmp_path / "src")
    _zip(src, www / "master.zip")
    sha = manifest_sha256(src, ["stack1", "stack2"])
    dest = tmp_path / "resources" / "vnc"
    r = run_cli(
        "fetch-demo", "--dest", str(dest), "--local", str(tmp_path / "absent"),
        "--url", f"{url}/master.zip", "--sha256", sha,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert manifest_sha256(dest, ["stack1", "stack2"]) == sha
    assert (dest / "README.md").read_text() == "fake VNC\n"
    assert not list(dest.parent.glob("*.partial-*"))


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, http_folder):
    www, url = http_folder
    _zip(_fake_repo(tmp_path / "src"), www / "master.zip")
    dest = tmp_path / "resources" / "vnc"
    r = run_cli(
        "fetch-demo", "--dest", str(dest), "--local", str(tmp_path / "absent"),
        "--url", f"{url}/master.zip", "--sha256", "0" * 64,
    )  # fmt: skip
    assert_user_error(r, "checksum mismatch")
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_failure_is_a_clear_error(tmp_path, http_folder):
    _, url = http_folder
    r = run_cli(
        "fetch-demo", "--dest", str(tmp_path / "d"), "--local", str(tmp_path / "absent"),
        "--url", f"{url}/missing.zip",
    )  # fmt: skip
    assert_user_error(r, "download failed", "404")
    assert not (tmp_path / "d").exists()


def test_local_copy_is_copied_and_verified(tmp_path):
    src = _fake_repo(tmp_path / "src")
    sha = manifest_sha256(src, ["stack1", "stack2"])
    dest = tmp_path / "dest"
    r = run_cli("fetch-demo", "--dest", str(dest), "--local", str(src), "--sha256", sha)
    assert r.returncode == 0, r.stderr
    assert manifest_sha256(dest, ["stack1", "stack2"]) == sha
    # a local copy that differs from the expected content is refused
    (src / "stack1" / "raw" / "00.tif").write_bytes(b"damaged")
    r = run_cli("fetch-demo", "--dest", str(tmp_path / "d2"), "--local", str(src), "--sha256", sha)
    assert_user_error(r, "checksum mismatch", str(src))


def test_real_vnc_copy_matches_the_builtin_checksum(tmp_path, vnc):
    dest = tmp_path / "vnc"
    r = run_cli("fetch-demo", "--dest", str(dest), "--local", str(vnc))
    assert r.returncode == 0, r.stderr
    assert len(list((dest / "stack1" / "raw").glob("*.tif"))) == 20
    assert len(list((dest / "stack2" / "raw").glob("*.tif"))) == 20
