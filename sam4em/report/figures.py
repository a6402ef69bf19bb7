"""The report's figures, each written as a PNG file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em.plotting import pyplot, save_figure


def _save(fig: Any, out: str | os.PathLike[str]) -> Path:
    return save_figure(fig, out, dpi=90, tight=True)


def per_slice_dice(per_slice: pd.DataFrame, out: str | os.PathLike[str]) -> Path:
    """Dice of every class on every test slice."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for cls, rows in per_slice.groupby("class", sort=False):
        ax.plot(rows["z"], rows["dice"], marker="o", label=cls)
    ax.set_xlabel("slice (z)")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.set_title("Agreement with the annotation, slice by slice (test slices)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def size_histograms(tables: dict[str, pd.DataFrame], out: str | os.PathLike[str]) -> Path:
    """Histograms of object volumes (cubic micrometres, log scale) per class."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.2), squeeze=False)
    for ax, (cls, table) in zip(axes[0], tables.items(), strict=True):
        volumes = table["volume_nm3"].to_numpy() / 1e9
        if len(volumes):
            bins = np.logspace(np.log10(volumes.min()), np.log10(volumes.max()) + 1e-9, 25)
            ax.hist(volumes, bins=bins, color="tab:blue")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range: decades only
        ax.set_title(f"{cls}: {len(volumes)} objects")
        ax.set_xlabel("object volume (µm³)")
        ax.set_ylabel("count")
    return _save(fig, out)


#: the colours of the error map: found by both, by sam4em only, by the annotation only
ERROR_COLOURS = {
    "true positive (annotated and predicted)": (0.15, 0.75, 0.25),
    "false positive (predicted, not annotated)": (0.9, 0.15, 0.85),
    "false negative (annotated, missed)": (1.0, 0.65, 0.0),
}


def error_rgb(
    raw: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.55
) -> np.ndarray:
    """RGB float image: grey ``raw`` with true positives, false positives and false
    negatives tinted in :data:`ERROR_COLOURS`."""
    rgb = np.repeat((raw.astype(np.float32) / 255)[..., None], 3, axis=-1)
    kinds = (truth & pred, pred & ~truth, truth & ~pred)
    for where, colour in zip(kinds, ERROR_COLOURS.values(), strict=True):
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.array(colour, np.float32)
    return rgb


def zoom_boxes(
    truth: np.ndarray, pred: np.ndarray, side: int, most: int = 3
) -> list[tuple[int, int]]:
    """Top-left corners of up to ``most`` square crops of ``side`` pixels around the
    annotated (else predicted) objects of a slice with the most wrong pixels."""
    from scipy import ndimage

    wrong = truth ^ pred
    ids, n = ndimage.label(truth if truth.any() else pred)
    corners = []
    for box in ndimage.find_objects(ids)[:n]:
        cy, cx = ((s.start + s.stop) // 2 for s in box)
        y0 = int(np.clip(cy - side // 2, 0, max(0, truth.shape[0] - side)))
        x0 = int(np.clip(cx - side // 2, 0, max(0, truth.shape[1] - side)))
        corners.append((int(wrong[y0 : y0 + side, x0 : x0 + side].sum()), y0, x0))
    chosen: list[tuple[int, int]] = []
    for _, y0, x0 in sorted(corners, reverse=True):
        if all(abs(y0 - a) >= side or abs(x0 - b) >= side for a, b in chosen):
            chosen.append((y0, x0))
        if len(chosen) == most:
            break
    return chosen


def small_objects(truth: np.ndarray, share: float = 0.002) -> bool:
    """Whether a slice's annotated objects are small: their median area under ``share``
    of the slice (a synapse of a few pixels at the overview's size)."""
    from scipy import ndimage

    ids, n = ndimage.label(truth)
    if n == 0:
        return False
    areas = np.bincount(ids.ravel())[1:]
    return float(np.median(areas)) < share * truth.size


def error_maps(
    raw: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    uncertainty: np.ndarray,
    z: int,
    cls: str,
    out: str | os.PathLike[str],
    zoom_side: int = 96,
) -> Path:
    """One test slice of one class: the EM, the error map (legend below it) and the
    model's uncertainty; where the objects are small, a second row of zoomed crops of the
    error map (their places boxed in the overview)."""
    from matplotlib.patches import Patch, Rectangle

    plt = pyplot()
    crops = zoom_boxes(truth, pred, zoom_side) if small_objects(truth) else []
    rows = 2 if crops else 1
    fig, axes = plt.subplots(rows, 3, figsize=(13, 4.6 * rows), squeeze=False)
    errors = error_rgb(raw, truth, pred)
    axes[0, 0].imshow(raw, cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title(f"EM, test slice {z}", fontsize=10)
    axes[0, 1].imshow(errors)
    axes[0, 1].set_title(f"{cls}: sam4em against the annotation", fontsize=10)
    axes[0, 2].imshow(raw, cmap="gray", vmin=0, vmax=255)
    # the EM shows through wherever the model is sure (under 0.05 bits)
    bits = np.ma.masked_less(uncertainty.astype(np.float32) / 255, 0.05)
    heat = axes[0, 2].imshow(bits, cmap="magma", vmin=0, vmax=1)
    axes[0, 2].set_title(f"{cls}: uncertainty (bits; 1 = a coin toss)", fontsize=10)
    fig.colorbar(heat, ax=axes[0, 2], fraction=0.046, pad=0.02)
    handles = [Patch(color=c, label=name) for name, c in ERROR_COLOURS.items()]
    axes[0, 1].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02),
                      fontsize=8, frameon=False)  # fmt: skip
    for k, (y0, x0) in enumerate(crops):
        axes[0, 1].add_patch(Rectangle((x0, y0), zoom_side, zoom_side, fill=False, color="w", lw=1))
        axes[0, 1].text(x0, y0 - 4, str(k + 1), color="w", fontsize=9)
        axes[1, k].imshow(errors[y0 : y0 + zoom_side, x0 : x0 + zoom_side], interpolation="nearest")
        axes[1, k].set_title(f"zoom {k + 1}: y {y0}-{y0 + zoom_side}, x {x0}-{x0 + zoom_side}")
    for ax in axes.ravel():
        ax.axis("off")
    return _save(fig, out)


def analysis_distributions(
    panels: list[tuple[str, np.ndarray, str, float | None]], out: str | os.PathLike[str]
) -> Path:
    """Histograms of the cross-class measures: one panel per (title, values, x label,
    marked value) where a vertical line marks the flag's share; a note when none."""
    plt = pyplot()
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.4),
                             squeeze=False)  # fmt: skip
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no class pairs configured (analysis.contacts, "
                        "analysis.distances)", ha="center", va="center")  # fmt: skip
        axes[0, 0].axis("off")
    for ax, (title, values, xlabel, mark) in zip(axes[0], panels, strict=False):
        finite = values[np.isfinite(values)]
        ax.hist(finite, bins=20, color="tab:purple")
        if mark is not None:
            ax.axvline(mark, color="k", ls="--", lw=1, label=f"flagged at ≥ {mark:g}")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("objects")
    return _save(fig, out)
