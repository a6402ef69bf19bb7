"""Set up and run one training stage from its settings (the ``train`` verb)."""

from __future__ import annotations

import logging
from pathlib import Path

from sam4em.errors import Sam4emError
from sam4em.model.checkpoint import load_checkpoint
from sam4em.model.sam4em_model import build_model
from sam4em.train.settings import TrainSettings
from sam4em.train.stage_choice import choose_stage, skip_stage2
from sam4em.train.tile_data import TileSet, tile_store_paths
from sam4em.train.trainer import TrainResult, train_stage

log = logging.getLogger(__name__)


def run_stage(
    settings: TrainSettings,
    train_tiles: list[str],
    val_tiles: list[str],
    out: Path,
    init: str | None = None,
    work_dir: Path | None = None,
) -> TrainResult:
    """Train stage 1 from the configured base, or stage 2 from the stage-1 checkpoint;
    after stage 2, ``out`` holds whichever of the two scores better on val
    (:func:`sam4em.train.stage_choice.choose_stage`)."""
    stage, model_config = settings.stage.stage, settings.model
    sequences = stage == 2
    train = TileSet(tile_store_paths(train_tiles), sequences=sequences)
    val = TileSet(tile_store_paths(val_tiles), sequences=sequences) if val_tiles else None
    if train.classes != list(model_config.classes):
        raise Sam4emError(
            f"tile classes {train.classes} differ from the config's {list(model_config.classes)}"
        )
    if stage == 1:
        if init:
            raise Sam4emError("--init is for stage 2 (stage 1 starts from the configured base)")
        model = build_model(model_config)
        init_identity = ""
    else:
        if not init:
            raise Sam4emError("stage 2 needs --init, the stage-1 checkpoint")
        if len(train) == 0 or (val is not None and len(val) == 0):
            empty = "train" if len(train) == 0 else "val"
            reason = (f"the {empty} slices have no neighbours in z (gaps between all of "
                      "them), so there are no z-sequences for the memory")  # fmt: skip
            skip_stage2(out, Path(init), reason)
            return TrainResult(0, 0, float("nan"), 0.0)
        model, payload = load_checkpoint(
            init, base_checkpoint=model_config.checkpoint, expect=model_config
        )
        init_identity = f"{Path(init).name}:{payload['extra'].get('step')}"
    log.info(
        "stage %d: %d training examples from %s",
        stage,
        len(train),
        ", ".join(map(str, train_tiles)),
    )
    result = train_stage(
        model,
        settings.stage,
        train,
        val,
        out,
        work_dir or out.with_name(out.stem),
        init_identity,
    )
    if stage == 2 and val is not None and len(val):
        assert settings.min_gain is not None  # set for stage 2 by TrainSettings.from_config
        choose_stage(out, Path(init), val, settings.stage, model_config, settings.min_gain)
    return result
