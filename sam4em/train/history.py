"""Training history as a CSV table and a training-curve figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sam4em.io.atomic import write_bytes_atomic
from sam4em.plotting import pyplot, save_figure

BASE_COLUMNS = ["step", "loss", "loss_stage1", "loss_stage2", "lr", "elapsed_s"]


def history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    """The history as a table: one row per logged step, val columns where validated."""
    frame = pd.DataFrame(history)
    for col in BASE_COLUMNS:
        if col not in frame:
            frame[col] = float("nan")
    extra = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    return frame[BASE_COLUMNS + extra]


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    """Write the history CSV atomically."""
    write_bytes_atomic(path, history_frame(history).to_csv(index=False).encode())


def write_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss and validation Dice against step, as a PNG."""
    plt = pyplot()
    frame = history_frame(history)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.6))
    for col, label in (
        ("loss", "total"),
        ("loss_stage1", "stage-1 decoder"),
        ("loss_stage2", "stage-2 decoder"),
    ):
        rows = frame.dropna(subset=[col])
        ax_loss.plot(rows["step"], rows[col], label=label)
    ax_loss.set(xlabel="training step", ylabel="loss (BCE + Dice)", title=f"{title}: training loss")
    ax_loss.legend()
    dice_cols = [c for c in frame.columns if c.startswith("val_dice_")]
    for col in dice_cols:
        rows = frame.dropna(subset=[col])
        ax_dice.plot(rows["step"], rows[col], marker="o", label=col.removeprefix("val_dice_"))
    ax_dice.set(xlabel="training step", ylabel="Dice", ylim=(0, 1), title="validation Dice")
    if dice_cols:
        ax_dice.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
