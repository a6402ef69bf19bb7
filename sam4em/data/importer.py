"""Import one configured dataset into the canonical ``volume.zarr``.

Layout written (zarr v3, ZYX, Blosc/Zstd)::

    volume.zarr/              OME-NGFF image; attrs: ome (multiscales of raw), sam4em
    volume.zarr/raw           uint8 raw intensities (see sam4em.io.intensity for the rule)
    volume.zarr/raw_2x, ...   viewer levels (2x2 means; sam4em.io.pyramid)
    volume.zarr/labels        OME labels group listing the label images below
    volume.zarr/labels/<c>/0  uint8 0/1 mask of class c, for each labelled class; <c> is
                              an OME label image with its own levels 1, 2, ... (2x2 modes)

The workflow's ``layers`` step later lists each class's predicted objects here as well
(``labels/<c>_objects``, see :mod:`sam4em.report.viewer`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import zarr

from sam4em import __version__
from sam4em.crops import Crop
from sam4em.data.settings import ImportSettings
from sam4em.data.z_index import check_z_index, describe_gaps, gaps, numbers_from_names
from sam4em.errors import InputDataError
from sam4em.io.atomic import atomic_directory, check_output_target
from sam4em.io.intensity import to_uint8, volume_range
from sam4em.io.labels import ClassMaskSource, open_label_sources
from sam4em.io.pyramid import write_pyramid
from sam4em.io.slice_folder import SliceFolderSource
from sam4em.io.source import VolumeSource, absolute_spec, open_source, source_path
from sam4em.io.zarr_store import (
    LABELLED,
    LEVEL0,
    VOLUME,
    create_array,
    open_group,
    write_label_metadata,
)
from sam4em.plotting import class_colour
from sam4em.progress import progress

log = logging.getLogger(__name__)


def _open_keyed(spec: str, key: str) -> VolumeSource:
    try:
        return open_source(spec)
    except InputDataError as exc:
        raise InputDataError(f"{key}: {exc}") from None


def _read_keyed(source: VolumeSource, key: str, z0: int, z1: int) -> np.ndarray:
    try:
        return source.read(z0, z1)
    except InputDataError as exc:
        raise InputDataError(f"{key}: {exc}") from None


def _check_inputs(
    raw: VolumeSource,
    labels: list[ClassMaskSource],
    crop_labels: dict[str, list[ClassMaskSource]],
    s: ImportSettings,
) -> None:
    for lab in labels:
        if lab.source.shape != raw.shape:
            raise InputDataError(
                f"{lab.key}: shape {lab.source.shape} does not match the raw volume "
                f"{raw.shape} ({raw.name})"
            )
    nz = raw.shape[0]
    for part, (first, last) in s.split.items():
        if last >= nz:
            raise InputDataError(
                f"{s.key}.split.{part}: slices {first}-{last} are outside the volume "
                f"({nz} slices, 0-{nz - 1})"
            )
    for crop in s.crops:
        if not crop.inside(raw.shape):
            raise InputDataError(
                f"{crop.key}: crop {crop.describe()} lies outside the volume "
                f"{tuple(raw.shape)} ({raw.name})"
            )
        for lab in crop_labels.get(crop.name, []):
            if tuple(lab.source.shape) != crop.shape:
                raise InputDataError(
                    f"{lab.key}: shape {tuple(lab.source.shape)} does not match the crop's "
                    f"shape {crop.shape}"
                )


def resolve_z_index(settings: ImportSettings, raw: VolumeSource) -> list[int]:
    """Each slice's section number (see :mod:`sam4em.data.z_index`): as configured, or
    with ``auto`` the numbers in the raw slice folder's file names when they show gaps
    (reported in the log), else consecutive."""
    n, key = raw.shape[0], f"{settings.key}.z_index"
    if settings.z_index == "consecutive":
        return list(range(n))
    if settings.z_index == "auto":
        names = [p.name for p in raw.files] if isinstance(raw, SliceFolderSource) else []
        numbers = numbers_from_names(names) if names else None
        if numbers is None or not gaps(numbers):
            return list(range(n))
        log.warning(
            "%s: the raw file names number the slices %s ... %s with %s; the memory, the "
            "z-sequences and the consistency metric respect them (set %s: consecutive if "
            "the numbers are not section numbers)",
            settings.key, numbers[0], numbers[-1], describe_gaps(numbers), key,
        )  # fmt: skip
        return numbers
    try:
        values = check_z_index(list(settings.z_index), n, key)
    except ValueError as exc:
        raise InputDataError(str(exc)) from None
    log.info("%s: %s", key, describe_gaps(values))
    return values


def input_paths(settings: ImportSettings) -> list[Path]:
    """The files and folders a dataset config reads: raw and every label source."""
    labels = settings.labels or {}
    specs = [settings.raw]
    for spec in [labels, *(c.labels for c in settings.crops if c.labels)]:
        specs += [spec["source"]] if "source" in spec else list((spec.get("masks") or {}).values())
    return [source_path(s) for s in dict.fromkeys(specs)]


def inputs_fingerprint(settings: ImportSettings) -> str:
    """A digest of the name, size and modification time of every file the dataset's
    sources hold (a folder's own time does not change when a file in it is rewritten).
    The workflow declares it, so new pixels under the same file name re-import."""
    entries = []
    for root in input_paths(settings):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            stat = path.stat()
            entries.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def import_dataset(settings: ImportSettings, out: str | os.PathLike[str]) -> Path:
    """Read the dataset of ``settings`` and write ``out`` (a ``volume.zarr``) atomically.

    ``out`` may replace an earlier volume store, never anything else or an input."""
    key = settings.key
    check_output_target(out, input_paths(settings))
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(_open_keyed(settings.raw, f"{key}.raw"))
        labels = _open_labels(settings.labels, settings, key)
        crop_labels = {
            c.name: _open_labels(c.labels, settings, c.key) for c in settings.crops if c.labels
        }
        for src in {id(lab.source): lab.source for lab in _all(labels, crop_labels)}.values():
            stack.enter_context(src)
        _check_inputs(raw, labels, crop_labels, settings)
        if raw.dtype == np.uint8:
            lo, hi = 0.0, 255.0
        elif settings.raw_range:
            lo, hi = settings.raw_range
        else:
            try:
                lo, hi = volume_range(raw)
            except InputDataError as exc:
                raise InputDataError(f"{key}.raw: {exc}") from None
        z_index = resolve_z_index(settings, raw)
        return _write_volume(settings, raw, labels, crop_labels, (lo, hi), z_index, Path(out))


def _open_labels(spec: dict | None, settings: ImportSettings, key: str) -> list[ClassMaskSource]:
    try:
        return list(open_label_sources(spec, list(settings.classes), key))
    except InputDataError as exc:
        raise InputDataError(f"{key}.labels: {exc}") from None


def _all(
    labels: list[ClassMaskSource], crop_labels: dict[str, list[ClassMaskSource]]
) -> list[ClassMaskSource]:
    return [*labels, *(lab for group in crop_labels.values() for lab in group)]


def _known(labels: list[ClassMaskSource], cache: dict[int, np.ndarray]) -> np.ndarray | None:
    """Where every source of ``labels`` is painted (read data in ``cache``); None: all."""
    known = None
    for lab in labels:
        k = lab.known(cache[id(lab.source)])
        if k is not None:
            known = k if known is None else known & k
    return known


def _read_labels(
    labels: list[ClassMaskSource], z0: int, z1: int, seen: dict[int, set[int]]
) -> dict[int, np.ndarray]:
    """Slices [z0, z1) of each source of ``labels``, read once each."""
    cache: dict[int, np.ndarray] = {}
    for lab in labels:
        if id(lab.source) not in cache:
            cache[id(lab.source)] = _read_keyed(lab.source, lab.key, z0, z1)
            if lab.values is not None:
                seen.setdefault(id(lab.source), set()).update(
                    np.unique(cache[id(lab.source)]).tolist()
                )
    return cache


def _check_label_values(labels: list[ClassMaskSource], seen: dict[int, set[int]]) -> None:
    """A class whose configured values occur in none of its label images is an error that
    names the values the (first) image does hold (a wrong value would silently train on
    nothing); one crop without the class is fine."""
    found_any: dict[str, bool] = {}
    for lab in labels:
        hit = lab.values is None or bool(seen.get(id(lab.source), set()).intersection(lab.values))
        found_any[lab.cls] = found_any.get(lab.cls, False) or hit
    for lab in labels:
        found = seen.get(id(lab.source), set())
        if not found_any[lab.cls]:
            held = sorted(found)
            shown = ", ".join(map(str, held[:20])) + (" ..." if len(held) > 20 else "")
            key = lab.key.removesuffix(".source") + f".values.{lab.cls}"
            raise InputDataError(
                f"{key}: {', '.join(map(str, lab.values))} does not occur in the label image "
                f"{lab.source.name}; the values it holds are {shown}"
            )


def _write_volume(
    settings: ImportSettings,
    raw: VolumeSource,
    labels: list[ClassMaskSource],
    crop_labels: dict[str, list[ClassMaskSource]],
    raw_range: tuple[float, float],
    z_index: list[int],
    out: Path,
) -> Path:
    chunks, name, classes = list(settings.chunks), settings.name, list(settings.classes)
    shape = raw.shape
    crops = [c.resolved(shape) for c in settings.crops]
    labelled_classes = [c for c in classes if c in {lab.cls for lab in _all(labels, crop_labels)}]
    metadata = {
        "version": __version__,
        "import_id": uuid.uuid4().hex,  # a new identity per import: stale blocks are redone
        "dataset": name,
        "classes": classes,
        "labelled_classes": labelled_classes,
        "voxel_size_nm": list(settings.voxel_size),
        "split": {part: list(rng) for part, rng in settings.split.items()},
        "crops": [c.to_json() for c in crops],
        "z_index": z_index,
        "z_gaps": describe_gaps(z_index),
        "raw_source": absolute_spec(settings.raw),
        "raw_dtype": str(raw.dtype),
        "raw_range": list(raw_range),
        "label_sources": {lab.cls: absolute_spec(lab.source.name) for lab in labels},
    }
    with atomic_directory(out, VOLUME) as tmp:
        root = open_group(tmp, mode="w")
        raw_arr = create_array(root, "raw", shape, chunks, "uint8")
        lab_group = root.create_group("labels") if labelled_classes else None
        lab_arrs = {
            cls: create_array(lab_group.create_group(cls), LEVEL0, shape, chunks, "uint8")
            for cls in labelled_classes
        }
        known_arr = create_array(root, LABELLED, shape, chunks, "uint8") if crops else None
        counts = dict.fromkeys(lab_arrs, 0)
        seen: dict[int, set[int]] = {}
        painted = 0
        in_volume = [c for c in crops if c.name not in crop_labels]  # the dataset's labels
        step = raw_arr.chunks[0]
        for z0 in progress(
            range(0, shape[0], step), desc=f"import {name}", unit="slab", leave=False
        ):
            z1 = min(z0 + step, shape[0])
            raw_arr[z0:z1] = to_uint8(_read_keyed(raw, f"datasets.{name}.raw", z0, z1), *raw_range)
            if not labels:
                continue
            cache = _read_labels(labels, z0, z1, seen)
            masks = {lab.cls: lab.mask(cache[id(lab.source)]) for lab in labels}
            for lab in labels:
                lab_arrs[lab.cls][z0:z1] = masks[lab.cls]
            known = _known(labels, cache)
            for crop in in_volume:
                (c0, c1), (y0, y1), (x0, x1) = crop.box
                a, b = max(z0, c0), min(z1, c1)
                if a >= b:
                    continue
                region = (slice(a - z0, b - z0), slice(y0, y1), slice(x0, x1))
                k = np.ones((b - a, y1 - y0, x1 - x0), bool) if known is None else known[region]
                known_arr[a:b, y0:y1, x0:x1] = k  # type: ignore[index]
                painted += int(k.sum())
                for cls, m in masks.items():
                    counts[cls] += int((m[region].astype(bool) & k).sum())
        for crop in crops:
            if crop.name in crop_labels:
                painted += _write_crop(
                    crop, crop_labels[crop.name], lab_arrs, known_arr, counts, seen
                )
        _check_label_values(_all(labels, crop_labels), seen)
        metadata["labelled_voxels"] = painted
        metadata["label_fractions"] = {c: n / max(painted, 1) for c, n in counts.items()}
        for cls, frac in metadata["label_fractions"].items():
            if frac == 0.0:
                log.warning("dataset %s: class %s has no labelled voxel", name, cls)
        _write_levels(root, lab_group, classes, list(settings.voxel_size), name)
        root.attrs["sam4em"] = metadata
    return out


def _write_crop(
    crop: Crop,
    labels: list[ClassMaskSource],
    lab_arrs: dict[str, zarr.Array],
    known_arr: zarr.Array | None,
    counts: dict[str, int],
    seen: dict[int, set[int]],
) -> int:
    """Write a crop's own labels into its box, slab by slab; returns its painted voxels."""
    (c0, c1), (y0, y1), (x0, x1) = crop.box
    step, painted = max(1, lab_arrs[labels[0].cls].chunks[0]), 0
    for z0 in range(c0, c1, step):
        z1 = min(z0 + step, c1)
        cache = _read_labels(labels, z0 - c0, z1 - c0, seen)
        known = _known(labels, cache)
        k = np.ones((z1 - z0, y1 - y0, x1 - x0), bool) if known is None else known
        for lab in labels:
            m = lab.mask(cache[id(lab.source)])
            lab_arrs[lab.cls][z0:z1, y0:y1, x0:x1] = m
            counts[lab.cls] += int((m.astype(bool) & k).sum())
        if known_arr is not None:
            known_arr[z0:z1, y0:y1, x0:x1] = k
        painted += int(k.sum())
    return painted


def _write_levels(
    root: zarr.Group,
    labels: zarr.Group | None,
    classes: list[str],
    voxel: list[float],
    name: str,
) -> None:
    """The viewer levels and OME metadata of the raw image and of each label image."""
    truth = sorted(labels.group_keys()) if labels is not None else []
    total = root["raw"].shape[0] * (1 + len(truth))
    with progress(total=total, desc=f"levels {name}", unit="slice", leave=False) as bar:
        write_pyramid(root, name, voxel, "mean", level0="raw", progress=bar.update)
        for cls in truth:
            write_pyramid(labels[cls], f"{cls} (truth)", voxel, "mode", progress=bar.update)
            write_label_metadata(labels, cls, class_colour(classes, cls))
