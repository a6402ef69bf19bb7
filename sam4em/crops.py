"""Labelled crops: the boxes of a volume whose labels are known, each with a role.

A dataset's labels are known only inside its crops; everywhere else they are unknown,
never background. A crop is a box in the raw volume's voxels (``offset`` and ``shape``,
z y x) with a role (``train``, ``val`` or ``test``) and, optionally, a label source of
its own with the box's shape (otherwise the dataset's labels, which have the volume's
shape, are read inside the box). A whole-slice ``split`` range is a crop of whole
planes (named ``split.ROLE``), so both forms can be mixed. Crops of different roles
must not overlap. Inside a crop, an ``ignore`` value of the label source marks voxels
nobody painted: they are unknown too (``volume.zarr/labelled`` is 0 there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sam4em.errors import ConfigError

ROLES = ("train", "val", "test")
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (start, stop) per z, y, x


@dataclass(frozen=True)
class Crop:
    """One labelled box of a volume. ``stop`` of y or x may be None: to the plane's edge
    (a split range, before the volume's shape is known)."""

    name: str  # "split.train" for a split range, else the configured or default name
    role: str  # train, val or test
    start: tuple[int, int, int]
    stop: tuple[int, int | None, int | None]
    key: str = ""  # the config key, for messages (datasets.NAME.crops[2])
    labels: Mapping[str, Any] | None = field(default=None, compare=False)  # own labels

    @property
    def z(self) -> range:
        """The crop's slices."""
        return range(self.start[0], self.stop[0])

    def resolved(self, shape: tuple[int, ...]) -> Crop:
        """The crop with open stops set to the volume's ``shape``."""
        stop = tuple(shape[a] if s is None else s for a, s in enumerate(self.stop))
        return Crop(self.name, self.role, self.start, stop, self.key, self.labels)  # type: ignore[arg-type]

    @property
    def box(self) -> Box:
        """((z0, z1), (y0, y1), (x0, x1)) of a resolved crop."""
        return tuple(zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Numpy index of a resolved crop in the volume."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The box's extent of a resolved crop."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value,operator]

    def overlaps(self, other: Crop) -> bool:
        """True when the two boxes share a voxel (open stops reach the plane's edge)."""
        inf = float("inf")
        return all(
            a0 < (b1 if b1 is not None else inf) and b0 < (a1 if a1 is not None else inf)
            for a0, a1, b0, b1 in zip(self.start, self.stop, other.start, other.stop, strict=True)
        )

    def inside(self, shape: tuple[int, ...]) -> bool:
        """True when the box lies inside a volume of ``shape``."""
        return all(s is None or s <= n for s, n in zip(self.stop, shape, strict=False))

    def describe(self) -> str:
        """``name (z0-z1, y0-y1, x0-x1)``: the box, stops exclusive, for messages."""
        spans = ", ".join(
            f"{a}-{'end' if b is None else b}" for a, b in zip(self.start, self.stop, strict=True)
        )
        return f"{self.name} ({spans})"

    def to_json(self) -> dict[str, Any]:
        """The record stored in ``volume.zarr``'s attributes (resolved crops)."""
        return {"name": self.name, "role": self.role, "start": list(self.start),
                "stop": list(self.stop)}  # fmt: skip

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Crop:
        """A crop from :meth:`to_json`."""
        return cls(record["name"], record["role"], tuple(record["start"]), tuple(record["stop"]))


def dataset_crops(ds: Mapping[str, Any], name: str) -> tuple[Crop, ...]:
    """The crops of dataset ``name``'s config block: its split ranges (whole planes, in
    the order train, val, test), then its ``crops`` entries, in config order."""
    key = f"datasets.{name}"
    split = ds.get("split") or {}
    out = [  # in role order, whatever the config's key order
        Crop(f"split.{role}", role, (a, 0, 0), (b + 1, None, None), f"{key}.split.{role}")
        for role in ROLES
        if role in split
        for a, b in [split[role]]
    ]
    for i, entry in enumerate(ds.get("crops") or []):
        start = tuple(int(v) for v in entry["offset"])
        stop = tuple(a + int(n) for a, n in zip(start, entry["shape"], strict=True))
        out.append(
            Crop(
                str(entry.get("name") or f"crop{i}"), str(entry["role"]), start, stop,  # type: ignore[arg-type]
                f"{key}.crops[{i}]", entry.get("labels") or None,
            )
        )  # fmt: skip
    return tuple(out)


def roles(ds: Mapping[str, Any]) -> set[str]:
    """The roles (train, val, test) that at least one crop or split range of a dataset
    config block takes."""
    return {c.role for c in dataset_crops(ds, "")}


def of_role(crops: Iterable[Crop], role: str) -> list[Crop]:
    """The crops of ``role``, in order."""
    return [c for c in crops if c.role == role]


def label_spec_classes(spec: Mapping[str, Any] | None) -> list[str]:
    """The classes a labels block ({source, values} or {masks}) names."""
    if not spec:
        return []
    return list(spec.get("values") or spec.get("masks") or {})


def check_crops(ds: Mapping[str, Any], name: str, classes: list[str]) -> None:
    """The checks of a dataset's crops that need no data: unique names, a label source
    for every crop, the same classes in every labels block, ``ignore`` not a class value,
    no overlap across roles. A :class:`ConfigError` names the key."""
    crops = dataset_crops(ds, name)
    key, labels = f"datasets.{name}", ds.get("labels")
    seen: dict[str, Crop] = {}
    for crop in crops:
        if crop.name in seen:
            raise ConfigError(
                f"{crop.key}.name: '{crop.name}' is also the name of {seen[crop.name].key}"
            )
        seen[crop.name] = crop
        if crop.labels is None and not labels:
            raise ConfigError(
                f"{crop.key}: no labels: give the crop its own labels block, or the "
                f"dataset labels of the volume's shape ({key}.labels)"
            )
    specs = [(f"{key}.labels", labels)] if labels else []
    specs += [(f"{c.key}.labels", c.labels) for c in crops if c.labels]
    names = [label_spec_classes(spec) for _, spec in specs]
    for (where, spec), named in zip(specs, names, strict=True):
        if names and set(named) != set(names[0]):
            raise ConfigError(
                f"{where}: labels classes {sorted(named)}, while {specs[0][0]} labels "
                f"{sorted(names[0])}: every crop must label the same classes"
            )
        ignore = spec.get("ignore")
        if ignore == 0 and "masks" in spec:
            raise ConfigError(f"{where}.ignore: 0 is the masks' background; pick another value")
        for cls, value in (spec.get("values") or {}).items():
            values = value if isinstance(value, list) else [value]
            if ignore is not None and ignore in values:
                raise ConfigError(
                    f"{where}.ignore: {ignore} is also the value of class {cls} "
                    f"({where}.values.{cls})"
                )
    for i, a in enumerate(crops):
        for b in crops[i + 1 :]:
            if a.role != b.role and a.overlaps(b):
                raise ConfigError(
                    f"{b.key}: crop {b.describe()} ({b.role}) overlaps {a.describe()} "
                    f"({a.role}) of {a.key}: crops of different roles must not share a voxel"
                )


def volume_crops(meta: Mapping[str, Any]) -> list[Crop]:
    """The resolved crops recorded in ``volume.zarr``'s ``sam4em`` attributes."""
    return [Crop.from_json(r) for r in meta.get("crops") or []]
