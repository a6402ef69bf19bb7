"""What inference reads from the config: how the predictor runs (:class:`PredictSettings`)
and what a block job expects (:class:`InferenceSettings`). Kept free of torch, so the
config check and the workflow's parse stay quick."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam4em.model.model_config import ModelConfig
from sam4em.tiling.settings import TilingSettings


@dataclass(frozen=True)
class PredictSettings:
    """How slices are cut into model tiles and run."""

    window: str = "bump"
    max_batch: int = 16
    memory: bool = True  # False: every slice alone (2D)
    both_ways: bool = False  # average a pass down the stack with a pass up
    scale: float = 1.0  # the model's pixel grid relative to the volume's (tiling.scale)
    tta: bool = False  # average over the 8 flips/rotations of each tile

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PredictSettings:
        """The predictor settings of a validated project config (``inference``, and the
        model's grid ``tiling.scale``)."""
        inf = config["inference"]
        return cls(
            window=inf["window"],
            max_batch=inf["max_batch"],
            both_ways=inf["both_ways"],
            scale=TilingSettings.from_config(config).scale,
            tta=inf["tta"],
        )


@dataclass(frozen=True)
class InferenceSettings:
    """What a block job reads: how the predictor runs, the model it expects (a
    checkpoint of another model is an error) and the device."""

    predict: PredictSettings
    model: ModelConfig
    device: str = "auto"  # auto, cpu or cuda

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InferenceSettings:
        """The block jobs' settings of a validated project config."""
        return cls(
            predict=PredictSettings.from_config(config),
            model=ModelConfig.from_config(config),
            device=config["inference"]["device"],
        )
