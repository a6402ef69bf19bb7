"""Fetching files over HTTP(S) and checking them by digest (demo data, SAM weights)."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from sam4em.errors import InputDataError
from sam4em.progress import progress


def download(url: str, target: Path, timeout: float = 60.0, desc: str = "download") -> None:
    """Download ``url`` to ``target`` with a progress bar."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", unit_scale=True, desc=desc) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise InputDataError(f"{url}: download failed ({exc})") from None


def file_digest(path: str | os.PathLike[str], algorithm: str, block: int = 1 << 22) -> str:
    """Hex digest of a file (``algorithm``: a :mod:`hashlib` name such as md5, sha256)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
