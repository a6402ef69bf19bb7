"""Make the demo stack available under ``resources/``: a local copy, else a download.

The download is the public repository archive (unidesigner/groundtruth-drosophila-vnc).
Either way the image files are checked against a content checksum
(:func:`sam4em.data.manifest.manifest_sha256` over ``stack1`` and ``stack2``), so a
damaged or different copy is refused instead of silently used.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from sam4em.data.manifest import manifest_sha256
from sam4em.errors import InputDataError
from sam4em.io.atomic import atomic_directory, check_output_target
from sam4em.io.download import download

log = logging.getLogger(__name__)

DEMO_FOLDERS = ("stack1", "stack2")
DEMO_FILES = ("README.md",)
#: content checksum of the 120 image files of the VNC ground-truth repository
DEMO_SHA256 = "284d951dbaa6fbb9d4a5906ab2c26979ceecbdf5dedc4e0ae7d06c472b21d238"
DEMO_URL = "https://github.com/unidesigner/groundtruth-drosophila-vnc/archive/refs/heads/master.zip"


#: written into a demo folder, so a later fetch knows it may replace it
DEMO_MARK = ".sam4em-demo"


class _DemoFolder:
    """The demo folder as an output kind: recognised by :data:`DEMO_MARK`."""

    name = "demo folder"

    def is_earlier(self, path: Path) -> bool:
        """Whether ``path`` is a demo folder fetch-demo wrote."""
        return (path / DEMO_MARK).is_file()


def find_local_copy(candidates: Iterable[str | Path]) -> Path | None:
    """First candidate folder that holds ``stack1/raw``, or None."""
    for cand in candidates:
        path = Path(cand).expanduser()
        if (path / "stack1" / "raw").is_dir():
            return path
    return None


def _verify(root: Path, expected: str | None, origin: str) -> None:
    if expected is None:
        return
    actual = manifest_sha256(root, DEMO_FOLDERS)
    if actual != expected:
        raise InputDataError(
            f"{origin}: demo data checksum mismatch (expected {expected[:12]}..., got "
            f"{actual[:12]}...): the copy is incomplete or not the VNC stack"
        )


def _copy_tree(src: Path, dest: Path) -> None:
    for folder in DEMO_FOLDERS:
        if (src / folder).is_dir():
            shutil.copytree(src / folder, dest / folder)
    for name in DEMO_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def _extract_archive(archive: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise InputDataError(f"{archive}: not a valid zip archive ({exc})") from None
    for cand in [into, *sorted(p for p in into.rglob("*") if p.is_dir())]:
        if (cand / "stack1" / "raw").is_dir():
            return cand
    raise InputDataError(f"{archive}: archive has no stack1/raw folder")


def fetch_demo(
    dest: str | Path,
    local_copies: Iterable[str | Path] = (),
    url: str = DEMO_URL,
    sha256: str | None = DEMO_SHA256,
) -> Path:
    """Fill ``dest`` with the demo stack from a local copy or ``url``; return ``dest``."""
    dest = Path(dest)
    local = find_local_copy(local_copies)
    check_output_target(dest, [] if local is None else [local])
    with atomic_directory(dest, _DemoFolder()) as tmp:
        (tmp / DEMO_MARK).write_text(f"demo data for sam4em, from {local or url}\n")
        if local is not None:
            log.info("demo data: copying local copy %s", local)
            _verify(local, sha256, str(local))
            _copy_tree(local, tmp)
        else:
            log.info("demo data: no local copy, downloading %s", url)
            with tempfile.TemporaryDirectory(dir=dest.parent) as work:
                archive = Path(work) / "demo.zip"
                download(url, archive, desc="download demo")
                root = _extract_archive(archive, Path(work) / "unpacked")
                _verify(root, sha256, url)
                _copy_tree(root, tmp)
    return dest


def write_crop(stack: str | Path, out: str | Path, z: slice, y: slice, x: slice) -> Path:
    """Write the ``(z, y, x)`` crop of a demo stack folder (``raw/*.tif`` and
    ``labels/*.png``, as in ``stack1``) to ``out/raw`` and ``out/labels`` in the same
    formats, slices renumbered from 00; returns ``out``. Small real data for quick runs:
    the tests' tiny pipeline and the device check's smoke run."""
    import numpy as np
    import tifffile
    from PIL import Image

    stack, out = Path(stack), Path(out)
    raws = sorted((stack / "raw").glob("*.tif"))[z]
    labels = sorted((stack / "labels").glob("*.png"))[z]
    if not raws or len(raws) != len(labels):
        raise InputDataError(f"{stack}: expected raw/*.tif and labels/*.png slices for {z}")
    (out / "raw").mkdir(parents=True)
    (out / "labels").mkdir()
    for i, (raw, lab) in enumerate(zip(raws, labels, strict=True)):
        tifffile.imwrite(out / "raw" / f"{i:02d}.tif", tifffile.imread(raw)[y, x])
        Image.fromarray(np.asarray(Image.open(lab))[y, x]).save(out / "labels" / f"{i:02d}.png")
    return out
