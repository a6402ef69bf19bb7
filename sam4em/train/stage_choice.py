"""Stage 2 never makes the model worse: after stage 2, its best weights (memory on) and
the stage-1 weights (memory off, slice by slice) are scored on the same val examples, and
the stage-2 checkpoint keeps stage 2 only when it beats stage 1 by ``min_gain``; otherwise
it holds the stage-1 weights with the memory off, and says why. A dataset whose slices
have no neighbours in z has no z-sequences: stage 2 is skipped the same way
(:func:`skip_stage2`), and the model runs in 2D."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam4em.io.atomic import write_bytes_atomic
from sam4em.model.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    update_extra,
)
from sam4em.model.device import pick_device
from sam4em.model.model_config import ModelConfig
from sam4em.model.sam4em_model import SAM4EM
from sam4em.train.history import write_curves, write_history
from sam4em.train.settings import StageSettings
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import THRESHOLD_LEVELS, choose_thresholds, val_dice_table

log = logging.getLogger(__name__)


def _mean(scores: dict[str, float]) -> float:
    return float(np.mean(list(scores.values()))) if scores else float("nan")


def slice_by_slice_table(
    model: SAM4EM, val: TileSet, s: StageSettings, device: torch.device
) -> dict[str, np.ndarray]:
    """Per-class val Dice at each of :data:`THRESHOLD_LEVELS` of ``model`` run on the last
    slice of each val example alone (memory off): the examples stage 2 is scored on."""
    model.to(device)
    predict = lambda x: [model(x[:, -1]).final]  # noqa: E731
    return val_dice_table(model, val, s, device, predict, THRESHOLD_LEVELS)


def choose_stage(
    stage2: Path,
    stage1: Path,
    val: TileSet,
    s: StageSettings,
    model: ModelConfig,
    min_gain: float,
) -> dict[str, Any]:
    """Keep stage 2 in ``stage2`` or replace it by ``stage1``'s weights with the memory
    off; returns the record of the choice (also stored in the checkpoint's ``extra``)."""
    device = pick_device()
    kept = read_checkpoint(stage2)
    score2 = _mean(kept["extra"].get("val_dice_at_thresholds") or {})
    first, payload = load_checkpoint(stage1, base_checkpoint=model.checkpoint, expect=model)
    table = slice_by_slice_table(first, val, s, device)
    best1 = {c: float(v.max()) for c, v in table.items()}
    score1 = _mean(best1)
    keep = not math.isnan(score2) and (math.isnan(score1) or score2 >= score1 + min_gain)
    verdict = "beats" if keep else "does not beat"
    choice = {
        "model_stage": 2 if keep else 1,
        "stage1_val_dice": round(score1, 4),
        "stage2_val_dice": round(score2, 4),
        "min_gain": min_gain,
        "reason": f"stage 2 (memory on) val Dice {score2:.4f} {verdict} stage 1 (memory off) "
        f"{score1:.4f} by at least {min_gain:g}",
    }
    log.info("stage 2: %s; predicting with stage %d", choice["reason"], choice["model_stage"])
    first.cpu()
    if keep:
        update_extra(stage2, {"memory": True, "choice": choice})
    else:
        extra = payload["extra"] | {
            "memory": False,
            "choice": choice,
            "thresholds": choose_thresholds(table, THRESHOLD_LEVELS),
            "val_dice_at_thresholds": best1,
        }
        save_checkpoint(first, stage2, extra=extra)
    return choice


def skip_stage2(stage2: Path, stage1: Path, reason: str) -> dict[str, Any]:
    """Write ``stage2`` (and its history and curves, empty) as the stage-1 weights with
    the memory off, without training: there is nothing for stage 2 to learn from."""
    choice = {"model_stage": 1, "skipped": True, "reason": reason}
    log.warning("stage 2 skipped: %s; predicting in 2D with stage 1", reason)
    write_bytes_atomic(stage2, stage1.read_bytes())
    update_extra(stage2, {"memory": False, "choice": choice})
    write_history([], stage2.with_name(f"{stage2.stem}_history.csv"))
    write_curves([], stage2.with_name(f"{stage2.stem}_curves.png"), f"stage 2 skipped: {reason}")
    return choice
