"""Matplotlib without a display, and figures written atomically as PNG."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from sam4em.io.atomic import write_bytes_atomic


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: str | os.PathLike[str], dpi: int, tight: bool = False) -> Path:
    """Write ``fig`` to ``out`` as PNG (temporary name, then rename) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    write_bytes_atomic(out, buffer.getvalue())
    return Path(out)
