"""Matplotlib without a display, figures written atomically as PNG, and mask overlays."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.io.atomic import write_bytes_atomic

COLOURS = [(0.1, 0.6, 1.0), (1.0, 0.3, 0.1), (1.0, 0.9, 0.0), (0.3, 1.0, 0.3), (0.9, 0.2, 0.9)]


def class_colour(classes: list[str], cls: str) -> tuple[float, float, float]:
    """The RGB (0-1) colour of class ``cls``: by its place in the configured ``classes``."""
    return COLOURS[classes.index(cls) % len(COLOURS)]


def overlay(raw: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """RGB float image: grey ``raw`` with each class mask tinted in its colour."""
    grey = raw.astype(np.float32) / 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for i, mask in enumerate(masks.values()):
        colour = np.array(COLOURS[i % len(COLOURS)], dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return rgb


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
