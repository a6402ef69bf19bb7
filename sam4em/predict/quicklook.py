"""Quick-look figure: raw slices beside the same slices with predicted classes overlaid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.plotting import COLOURS, overlay, pyplot, save_figure


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
