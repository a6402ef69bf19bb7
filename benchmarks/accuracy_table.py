"""Print the markdown table of an ``accuracy.py`` JSON file (for RESULTS.md).

Usage: .venv/bin/python benchmarks/accuracy_table.py benchmarks/results/accuracy.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("full", "no_memory_same_weights", "single_stage", "no_high_res", "unet", "unet25d")
CLASSES = ("glia", "mito", "synapse")


def _minutes(entry: dict) -> str:
    return "" if entry.get("train_minutes") is None else f"{entry['train_minutes']:.1f}"


def _cell(entry: dict, key: str, cls: str) -> str:
    mean, std = entry[key][cls], entry[f"{key}_std"][cls]
    return f"{mean:.3f} ± {std:.3f}"


def table(report: dict) -> str:
    """Markdown rows: per variant, Dice and consistency per class (mean ± std over seeds)."""
    summary = report["summary"]
    head = (
        "| variant | glia | mito | synapse | mean | consistency glia / mito / synapse "
        "| mito F1@0.5 | train min | seeds |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for name in [v for v in ORDER if v in summary] + [v for v in summary if v not in ORDER]:
        e = summary[name]
        dice = " | ".join(_cell(e, "test_dice", c) for c in CLASSES)
        consistency = " / ".join(f"{e['consistency'][c]:.2f}" for c in CLASSES)
        rows.append(
            f"| {name} | {dice} | {e['mean_dice']:.3f} ± {e['mean_dice_std']:.3f} | "
            f"{consistency} | {e['mito_f1_iou50']:.3f} | {_minutes(e)} | "
            f"{len(e['seeds'])} |"
        )
    truth = next(iter(summary.values()))["consistency_truth"]
    rows.append(
        "| ground truth | | | | | " + " / ".join(f"{truth[c]:.2f}" for c in CLASSES) + " | | | |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
