"""The import stage's settings, read once from the project config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam4em.config import dataset
from sam4em.crops import Crop, dataset_crops


@dataclass(frozen=True)
class ImportSettings:
    """Where one dataset's raw and labels are and how they become ``volume.zarr``."""

    name: str  # the dataset's key in the config
    raw: str  # a source spec (file, folder, file.h5:/key, store.zarr/key)
    labels: dict[str, Any] | None  # {source, values} or {masks}, as configured
    voxel_size: tuple[float, float, float]  # nm, z y x
    split: dict[str, tuple[int, int]]  # inclusive slice ranges per split
    crops: tuple[Crop, ...]  # every labelled box: the split ranges, then the crops
    raw_range: tuple[float, float] | None  # intensities mapped onto 0..255
    classes: tuple[str, ...]  # the project's classes, in config order
    chunks: tuple[int, int, int]  # storage.chunks of the written arrays
    # "auto", "consecutive" or each slice's section number (sam4em.data.z_index)
    z_index: str | tuple[int, ...] = "auto"

    @property
    def key(self) -> str:
        """The dataset's config key, for messages (``datasets.NAME``)."""
        return f"datasets.{self.name}"

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str) -> ImportSettings:
        """The import settings of dataset ``name`` in a validated project config."""
        ds = dataset(config, name)
        z, y, x = (float(v) for v in ds["voxel_size"])
        rr = ds.get("raw_range")
        c = config["storage"]["chunks"]
        return cls(
            name=name,
            raw=str(ds["raw"]),
            labels=ds.get("labels") or None,
            voxel_size=(z, y, x),
            split={p: (int(a), int(b)) for p, (a, b) in (ds.get("split") or {}).items()},
            crops=dataset_crops(ds, name),
            raw_range=None if not rr else (float(rr[0]), float(rr[1])),
            classes=tuple(config["classes"]),
            chunks=(int(c[0]), int(c[1]), int(c[2])),
            z_index=zi if isinstance(zi := ds.get("z_index", "auto"), str) else tuple(zi),
        )
