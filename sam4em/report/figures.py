"""The report's figures, each written as a PNG file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em.plotting import overlay, pyplot, save_figure


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


def overlays(
    raw: np.ndarray, truth: np.ndarray, pred: np.ndarray, z: int, cls: str, out: str
) -> Path:
    """Raw slice, annotation and prediction of one class, side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    axes[0].imshow(raw, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title(f"EM, slice {z}")
    axes[1].imshow(overlay(raw, {cls: truth}))
    axes[1].set_title(f"{cls}: annotation")
    axes[2].imshow(overlay(raw, {cls: pred}))
    axes[2].set_title(f"{cls}: sam4em")
    for ax in axes:
        ax.axis("off")
    return _save(fig, out)


def size_histograms(tables: dict[str, pd.DataFrame], out: str | os.PathLike[str]) -> Path:
    """Histograms of object volumes (cubic micrometres, log scale) per class."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(4 * len(tables), 3.2), squeeze=False)
    for ax, (cls, table) in zip(axes[0], tables.items(), strict=True):
        volumes = table["volume_nm3"].to_numpy() / 1e9
        if len(volumes):
            bins = np.logspace(np.log10(volumes.min()), np.log10(volumes.max()) + 1e-9, 25)
            ax.hist(volumes, bins=bins, color="tab:blue")
            ax.set_xscale("log")
        ax.set_title(f"{cls}: {len(volumes)} objects")
        ax.set_xlabel("object volume (µm³)")
        ax.set_ylabel("count")
    return _save(fig, out)
