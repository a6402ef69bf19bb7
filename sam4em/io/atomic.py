"""Atomic outputs: write under a temporary name, rename into place when complete.

A job killed half-way leaves only a ``*.partial-*`` name behind, never something
that looks like a finished output. A directory output replaces only an earlier output
of its own kind, and never an input: a user's ``--out`` pointed at the wrong place is
an error, not a deleted folder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sam4em.errors import OutputError


def partial_name(target: Path, marker: str = "partial") -> Path:
    """A fresh temporary name beside ``target``: ``{target.name}.{marker}-{random}``
    (what :func:`remove_leftovers` finds again after a killed run)."""
    return target.with_name(f"{target.name}.{marker}-{uuid.uuid4().hex[:8]}")


def remove_leftovers(target: Path, marker: str = "partial") -> None:
    """Delete ``{target.name}.{marker}-*`` siblings: what a killed run of the job that
    owns ``target`` left behind. Only for targets one job owns (never for outputs that
    parallel jobs race to create)."""
    for path in target.parent.glob(f"{glob.escape(target.name)}.{marker}-*"):
        remove_path(path)


def remove_path(path: Path) -> None:
    """Delete a file, link or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def check_output_target(
    target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> None:
    """Refuse an output ``target`` that is, contains or lies inside one of ``inputs``."""
    out = Path(target).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if out == src or out in src.parents or src in out.parents:
            raise OutputError(
                f"{target}: output would overwrite the input {given}; choose another output path"
            )


class OutputKind(Protocol):
    """A kind of directory output (e.g. :class:`~sam4em.io.zarr_store.StoreKind`)."""

    name: str  # what users call it, e.g. "volume store"

    def is_earlier(self, path: Path) -> bool:
        """Whether ``path`` is an output of this kind, written before."""
        ...


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], kind: OutputKind) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds.

    An existing ``target`` is replaced only when ``kind`` recognises it as an earlier
    output of the same kind; anything else there is an OutputError, before any work.
    Partial copies a killed earlier run left beside ``target`` are removed.
    """
    target = Path(target)
    if (target.exists() or target.is_symlink()) and not (
        target.is_dir() and not target.is_symlink() and kind.is_earlier(target)
    ):
        raise OutputError(
            f"{target}: exists and is not a sam4em {kind.name}; refusing to replace it "
            "(choose another output path, or remove it yourself)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = partial_name(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists() or target.is_symlink():
        old = partial_name(target)
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        remove_path(old)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and an atomic rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(target)
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
    tmp = partial_name(target)
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
