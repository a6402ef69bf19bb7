"""The analysis stage's settings, read once from the project config.

Defaults: the contacts of synapses with glia (``analysis.contacts: null``) and the
distance from each mitochondrion to the nearest synapse (``analysis.distances: null``),
each only when both classes are configured. A lab with other classes names its own
pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam4em.config import dataset
from sam4em.crops import Crop, dataset_crops
from sam4em.errors import ConfigError

DEFAULT_CONTACTS = (("synapse", "glia"),)
DEFAULT_DISTANCES = (("mito", "synapse"),)

Pair = tuple[str, str]


def _pairs(value: Any, default: tuple[Pair, ...], classes: list[str], key: str) -> tuple[Pair, ...]:
    """Configured class pairs, or the defaults whose classes are both configured."""
    if value is None:
        return tuple(p for p in default if set(p) <= set(classes))
    pairs = tuple((str(a), str(b)) for a, b in value)
    for a, b in pairs:
        unknown = [c for c in (a, b) if c not in classes]
        if unknown:
            raise ConfigError(f"analysis.{key}: '{unknown[0]}' is not one of {classes}")
        if a == b:
            raise ConfigError(f"analysis.{key}: the pair [{a}, {b}] names one class twice")
    if len(set(pairs)) < len(pairs):
        raise ConfigError(f"analysis.{key}: a pair is listed twice")
    return pairs


def flag_column(first: str, second: str) -> str:
    """The name of the contact flag column of objects of ``first`` touching ``second``:
    ``tripartite`` for synapses with glia (a synapse with glia around it), else
    ``touches_{second}``."""
    return "tripartite" if (first, second) == ("synapse", "glia") else f"touches_{second}"


@dataclass(frozen=True)
class AnalysisSettings:
    """What the analysis measures across classes, and how annotate-next ranks regions."""

    contacts: tuple[Pair, ...]  # (a, b): share of a shell around each a object lying in b
    distances: tuple[Pair, ...]  # (a, b): distance from each a object to the nearest b
    shell_nm: float  # width of the contact shell
    contact_share: float  # share of the shell in b at which an object counts as touching b
    max_distance_nm: float  # distances are searched up to here (blocks read this halo)
    region_px: int  # the report's uncertainty check: regions of region_px x region_px pixels
    box: tuple[int, int, int]  # annotate-next candidate crops, z y x voxels
    rows: int  # annotate-next rows kept

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AnalysisSettings:
        """The analysis settings of a validated project config."""
        a, classes = config["analysis"], list(config["classes"])
        return cls(
            contacts=_pairs(a["contacts"], DEFAULT_CONTACTS, classes, "contacts"),
            distances=_pairs(a["distances"], DEFAULT_DISTANCES, classes, "distances"),
            shell_nm=float(a["shell_nm"]),
            contact_share=float(a["contact_share"]),
            max_distance_nm=float(a["max_distance_nm"]),
            region_px=int(a["annotate_region_px"]),
            box=tuple(int(v) for v in a["annotate_box"]),  # type: ignore[arg-type]
            rows=int(a["annotate_rows"]),
        )

    def analysed_classes(self) -> list[str]:
        """Classes whose objects get cross-class measures (``analysis/{class}.csv``)."""
        firsts = [a for a, _ in self.contacts + self.distances]
        return list(dict.fromkeys(firsts))

    def of_class(self, cls: str) -> tuple[Any, ...]:
        """What the measures of ``cls``'s objects read (its job's settings digest): its
        pairs, the shell and share when it has contacts, the bound when it has distances."""
        contacts = tuple(p for p in self.contacts if p[0] == cls)
        distances = tuple(p for p in self.distances if p[0] == cls)
        shell = (self.shell_nm, self.contact_share) if contacts else ()
        bound = (self.max_distance_nm,) if distances else ()
        return contacts, distances, shell, bound


def labelled_crops(config: dict[str, Any], name: str) -> tuple[Crop, ...]:
    """Every labelled crop of dataset ``name`` (split ranges included)."""
    return dataset_crops(dataset(config, name), name)
