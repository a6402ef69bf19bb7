"""The tiling stage's settings, read once from the project config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam4em.tiling.lattice import Lattice


@dataclass(frozen=True)
class TilingSettings:
    """How training and validation slices are cut into model tiles."""

    lattice: Lattice  # tile side = the model's input (model.img_size), tiling.stride
    scale: float = 1.0  # the model's pixel grid relative to the volume's
    sequence_length: int = 5  # slices per stored z-sequence

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TilingSettings:
        """The tiling settings of a validated project config."""
        tiling = config["tiling"]
        return cls(
            lattice=Lattice(config["model"]["img_size"], tiling["stride"]),
            scale=float(tiling["scale"]),
            sequence_length=int(tiling["sequence_length"]),
        )
