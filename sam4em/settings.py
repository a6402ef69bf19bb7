"""Every stage's typed settings, built from one config before any work starts.

Each stage reads its own frozen record (``ImportSettings``, ``TilingSettings``,
``TrainSettings``, ``PlanSettings``, ``InferenceSettings``, ``ComponentSettings``,
``AnalysisSettings``, ``EvaluationSettings``), built with ``XSettings.from_config(config, ...)``.
:func:`check_stage_settings` builds them all at once, so a setting a stage would refuse
is reported when the config is checked (``sam4em check-config``, or when the workflow
starts), not after the stages before it have run. :func:`rule_settings` is the digest
of what one workflow rule reads, which the rule declares as ``params``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sam4em.analysis.settings import AnalysisSettings
from sam4em.blocks.plan import PlanSettings
from sam4em.crops import roles
from sam4em.data.settings import ImportSettings
from sam4em.errors import ConfigError
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.model.model_config import ModelConfig
from sam4em.postprocess.settings import ComponentSettings
from sam4em.predict.settings import InferenceSettings
from sam4em.tiling.settings import TilingSettings
from sam4em.train.settings import TrainSettings


def check_stage_settings(config: dict[str, Any], origin: str = "config") -> None:
    """Build every stage's settings from a validated ``config``; a ConfigError names the
    first one that refuses."""
    checks = [
        *(
            (f"datasets.{n}", lambda n=n: ImportSettings.from_config(config, n))
            for n in config["datasets"]
        ),
        ("tiling", lambda: TilingSettings.from_config(config)),
        ("model", lambda: ModelConfig.from_config(config)),
        ("train.stage1", lambda: TrainSettings.from_config(config, 1)),
        ("train.stage2", lambda: TrainSettings.from_config(config, 2)),
        ("inference", lambda: PlanSettings.from_config(config)),
        ("inference", lambda: InferenceSettings.from_config(config)),
        *(
            ("components", lambda c=c: ComponentSettings.from_config(config, c))
            for c in config["classes"]
        ),
        ("analysis", lambda: AnalysisSettings.from_config(config)),
        *(
            ("evaluate", lambda n=n: EvaluationSettings.from_config(config, n))
            for n, ds in config["datasets"].items()
            if "test" in roles(ds)
        ),
    ]
    for key, build in checks:
        try:
            build()
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{origin}: {key}: {exc}") from None


def settings_digest(*records: Any) -> str:
    """A short, stable digest of settings records (frozen dataclasses or plain data):
    equal settings give equal digests whatever the key order of the config they came
    from. The workflow declares it as each rule's ``params``, so Snakemake reruns a job
    exactly when what it reads has changed."""
    import hashlib
    import json

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, range):
            return [value.start, value.stop, value.step]
        return value

    text = json.dumps([plain(r) for r in records], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rule_settings(
    config: dict[str, Any],
    rule: str,
    dataset: str | None = None,
    split: str | None = None,
    cls: str | None = None,
) -> str:
    """The :func:`settings_digest` of what the workflow rule ``rule`` reads from a
    validated ``config``, for one ``dataset`` (and ``split`` or class ``cls``)."""
    from sam4em.analysis.settings import labelled_crops
    from sam4em.config import dataset as dataset_config
    from sam4em.crops import dataset_crops, of_role

    if rule == "fetch_demo":
        return settings_digest(config["demo"])
    if rule == "import_volume":
        return settings_digest(ImportSettings.from_config(config, str(dataset)))
    if rule == "tile":
        crops = of_role(
            dataset_crops(dataset_config(config, str(dataset)), str(dataset)), str(split)
        )
        return settings_digest(TilingSettings.from_config(config), [c.box for c in crops])
    if rule in ("train_stage1", "train_stage2"):
        return settings_digest(TrainSettings.from_config(config, int(rule[-1])))
    if rule == "plan_blocks":
        return settings_digest(PlanSettings.from_config(config))
    if rule == "predict_block":
        return settings_digest(InferenceSettings.from_config(config))
    if rule.startswith("components"):
        return settings_digest(ComponentSettings.from_config(config, str(cls)))
    if rule == "analyze_objects":
        return settings_digest(
            AnalysisSettings.from_config(config).of_class(str(cls)),
            ComponentSettings.from_config(config, str(cls)).block_shape,
        )
    if rule == "annotate_next":
        a = AnalysisSettings.from_config(config)
        crops = labelled_crops(config, str(dataset))
        return settings_digest(a.box, a.rows, [(c.name, c.box) for c in crops])
    if rule == "evaluate":
        return settings_digest(EvaluationSettings.from_config(config, str(dataset)))
    if rule == "report":  # the report also shows the whole config
        return settings_digest(EvaluationSettings.from_config(config, str(dataset)), config)
    raise ValueError(f"no settings known for rule '{rule}'")
