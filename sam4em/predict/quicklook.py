"""Quick-look figure: raw slices beside the same slices with predicted classes overlaid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.plotting import pyplot, save_figure

COLOURS = [(0.1, 0.6, 1.0), (1.0, 0.3, 0.1), (1.0, 0.9, 0.0), (0.3, 1.0, 0.3), (0.9, 0.2, 0.9)]


def overlay(raw: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """RGB float image: grey ``raw`` with each class mask tinted in its colour."""
    grey = raw.astype(np.float32) / 255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for i, mask in enumerate(masks.values()):
        colour = np.array(COLOURS[i % len(COLOURS)], dtype=np.float32)
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colour
    return rgb


def draw_quicklook(
    raw: Any,
    probs: dict[str, Any],
    levels: dict[str, int],
    slices: list[int],
    out: str | os.PathLike[str],
) -> Path:
    """Write a PNG with one row per slice: raw, and raw with each class's mask (uint8
    probability at or above its level) overlaid."""
    plt = pyplot()
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(slices), 2, figsize=(8, 4 * len(slices)), squeeze=False)
    for row, z in zip(axes, slices, strict=True):
        image = np.asarray(raw[z])
        masks = {c: np.asarray(p[z]) >= levels[c] for c, p in probs.items()}
        row[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"slice {z}")
        row[1].imshow(overlay(image, masks))
        row[1].set_title(f"slice {z}: predictions")
        for ax in row:
            ax.axis("off")
    handles = [Patch(color=COLOURS[i % len(COLOURS)], label=c) for i, c in enumerate(probs)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, out, dpi=80)
