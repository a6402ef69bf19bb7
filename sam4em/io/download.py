"""Fetching files over HTTP(S) and checking them by digest (demo data, SAM weights)."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

from sam4em.errors import InputDataError
from sam4em.progress import progress


def download(url: str, target: Path, timeout: float = 60.0, desc: str = "download") -> None:
    """Download ``url`` (http, https, ftp or file) to ``target`` with a progress bar;
    an InputDataError for a malformed URL or a failed download."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "ftp", "file"):
        raise InputDataError(
            f"{url}: not a download URL (expected http://, https://, ftp:// or file://)"
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", unit_scale=True, desc=desc) as bar:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{url}: download failed ({exc})") from None


def file_digest(path: str | os.PathLike[str], algorithm: str, block: int = 1 << 22) -> str:
    """Hex digest of a file (``algorithm``: a :mod:`hashlib` name such as md5, sha256)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
