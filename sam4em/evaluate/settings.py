"""The evaluation stage's settings (also what the report reads), built once from the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sam4em.config import dataset
from sam4em.crops import Crop, dataset_crops, of_role
from sam4em.errors import InputDataError
from sam4em.postprocess.settings import ComponentSettings


@dataclass(frozen=True)
class EvaluationSettings:
    """How one dataset's test crops are scored."""

    classes: tuple[str, ...]  # configured classes, in config order
    test: tuple[Crop, ...]  # the held-out test crops (split.test: whole planes)
    components: Mapping[str, ComponentSettings]  # per class: threshold and connectivity
    detection_tolerance: int  # xy voxels

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str) -> EvaluationSettings:
        """The settings of dataset ``name`` in a validated config; an InputDataError when
        it has no test split."""
        ds = dataset(config, name)
        test = tuple(of_role(dataset_crops(ds, name), "test"))
        if not test:
            raise InputDataError(f"datasets.{name}: no test split or crop, nothing to evaluate")
        classes = tuple(config["classes"])
        return cls(
            classes=classes,
            test=test,
            components={c: ComponentSettings.from_config(config, c) for c in classes},
            detection_tolerance=int(config["evaluate"]["detection_tolerance"]),
        )

    def level(self, class_name: str, chosen: Mapping[str, float] | None) -> int:
        """The uint8 cut of ``class_name``'s probabilities that every metric scores."""
        return self.components[class_name].level(class_name, chosen)
