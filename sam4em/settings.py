"""Every stage's typed settings, built from one config before any work starts.

Each stage reads its own frozen record (``TilingSettings``, ``ModelConfig``,
``StageSettings``, ``PlanSettings``, ``PredictSettings``, ``ComponentSettings``,
``EvaluationSettings``);
:func:`check_stage_settings` builds them all at once, so a setting a stage would refuse
is reported when the config is checked (``sam4em check-config``, or when the workflow
starts), not after the stages before it have run.
"""

from __future__ import annotations

from typing import Any

from sam4em.blocks.plan import PlanSettings
from sam4em.errors import ConfigError
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.model.model_config import model_config_from
from sam4em.postprocess.settings import ComponentSettings
from sam4em.predict.block_job import predict_settings
from sam4em.tiling.settings import TilingSettings
from sam4em.train.settings import stage_settings


def check_stage_settings(config: dict[str, Any], origin: str = "config") -> None:
    """Build every stage's settings from a validated ``config``; a ConfigError names the
    first one that refuses."""
    checks = [
        ("tiling", lambda: TilingSettings.from_config(config)),
        ("model", lambda: model_config_from(config)),
        ("train.stage1", lambda: stage_settings(config, 1)),
        ("train.stage2", lambda: stage_settings(config, 2)),
        ("inference", lambda: PlanSettings.from_config(config)),
        ("inference", lambda: predict_settings(config["inference"], config["tiling"]["scale"])),
        *(
            ("components", lambda c=c: ComponentSettings.from_config(config, c))
            for c in config["classes"]
        ),
        *(
            ("evaluate", lambda n=n: EvaluationSettings.from_config(config, n))
            for n, ds in config["datasets"].items()
            if "test" in (ds.get("split") or {})
        ),
    ]
    for key, build in checks:
        try:
            build()
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{origin}: {key}: {exc}") from None
