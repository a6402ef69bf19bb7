"""Content checksums of data folders, independent of how they were packed or copied."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from sam4em.io.download import file_digest

IMAGE_SUFFIXES = {".tif", ".tiff", ".png"}


def image_files(root: Path, folders: Iterable[str]) -> list[Path]:
    """Image files under ``root/<folder>`` for each folder, sorted by relative path."""
    files = [
        p
        for folder in folders
        if (root / folder).is_dir()
        for p in (root / folder).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def manifest_sha256(root: Path, folders: Iterable[str]) -> str:
    """One digest over (relative path, file digest) of every image file in ``folders``."""
    digest = hashlib.sha256()
    for path in image_files(root, folders):
        digest.update(
            f"{path.relative_to(root).as_posix()}\t{file_digest(path, 'sha256')}\n".encode()
        )
    return digest.hexdigest()
