"""Atomic outputs: write under a temporary name, rename into place when complete.

A job killed half-way leaves only a ``*.partial-*`` name behind, never something
that looks like a finished output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _partial_name(target: Path) -> Path:
    return target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")


def remove_path(path: Path) -> None:
    """Delete a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists() or target.is_symlink():
        old = _partial_name(target)
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        remove_path(old)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and an atomic rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(target)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    write_bytes_atomic(target, (json.dumps(obj, indent=2) + "\n").encode())


def create_directory_once(target: str | os.PathLike[str], build: Callable[[Path], None]) -> bool:
    """Create ``target`` with ``build(tmp)`` unless it exists; never replaces it.

    Safe when several processes race: one rename wins, the others discard their copy.
    Returns True when this call created it.
    """
    target = Path(target)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(target)
    tmp.mkdir()
    try:
        build(tmp)
        tmp.rename(target)
        return True
    except OSError:
        if target.is_dir():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
