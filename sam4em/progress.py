"""Progress bars that stay readable in log files (Snakemake and SLURM redirect stderr)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Hide every progress bar from now on (the command's ``-q``)."""
    global _quiet
    _quiet = quiet


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar; on a terminal it updates live, in a log file at most every 30 s;
    none at all after ``set_quiet(True)``."""
    kwargs.setdefault("disable", _quiet)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
    return tqdm(*args, **kwargs)
