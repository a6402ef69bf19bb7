"""Crops to paint: the top of ``annotate_next.csv`` as ready-to-paint work.

``sam4em export-annotations results/NAME --top N --out FOLDER`` writes, for each of the
N least sure candidate crops that share no voxel with a labelled crop,
``FOLDER/CROP/raw.tif`` (the EM of the box, uint8, z y x) and
``FOLDER/CROP/labels.tif`` (an empty label image of the same shape: 0 background,
class k of the dataset's labelled classes painted as value k, :data:`IGNORE` where
nobody painted), plus ``FOLDER/crops.yaml``: the crop entries to paste under
``datasets.NAME.crops`` (role ``train``; change it to ``val`` for some). ``sam4em view
FOLDER`` opens every crop in napari at its place in the volume, the labels as labels
layers, and saves what was painted back into each ``labels.tif`` when the window
closes. The folder is never overwritten: painted work is the user's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sam4em.errors import InputDataError, OutputError
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import VOLUME

IGNORE = 255  #: the label value that marks voxels nobody painted (the crops' ``ignore``)
MANIFEST = "paint.json"


def export_annotations(
    results: str | os.PathLike[str], top: int, out: str | os.PathLike[str]
) -> list[dict[str, Any]]:
    """Write the top ``top`` rows of ``results/annotate_next.csv`` as crops to paint into
    the new folder ``out`` (see the module docstring); returns the crop entries."""
    res, folder = Path(results), Path(out)
    table_path = res / "annotate_next.csv"
    if not table_path.is_file():
        raise InputDataError(f"{table_path}: not found; run the workflow (annotate_next) first")
    if folder.exists() and any(folder.iterdir()):
        raise OutputError(
            f"{folder}: already exists and is not empty; painted work is never overwritten "
            "(name a new folder)"
        )
    volume = VOLUME.open(res / "volume.zarr")
    meta = volume.attrs["sam4em"]
    classes = list(meta["labelled_classes"])
    if not classes:
        raise InputDataError(f"{res / 'volume.zarr'}: the dataset labels no class to paint")
    table = pd.read_csv(table_path, keep_default_na=False)
    table = table[table["labelled"] == ""].head(top)
    if table.empty:
        raise InputDataError(
            f"{table_path}: every candidate crop shares voxels with a labelled crop; "
            "nothing is left to paint"
        )
    values = {c: k + 1 for k, c in enumerate(classes)}
    entries = []
    for r in table.itertuples():
        name = f"{folder.name}-{int(r.rank):03d}"
        box = (slice(r.z0, r.z1), slice(r.y0, r.y1), slice(r.x0, r.x1))
        raw = np.asarray(volume["raw"][box])
        crop_dir = folder / name
        _write_tiff(crop_dir / "raw.tif", raw)
        _write_tiff(crop_dir / "labels.tif", np.zeros(raw.shape, np.uint8))
        entries.append({
            "name": name,
            "offset": [int(r.z0), int(r.y0), int(r.x0)],
            "shape": [int(n) for n in raw.shape],
            "role": "train",
            "labels": {"source": str(crop_dir / "labels.tif"), "values": dict(values),
                       "ignore": IGNORE},
        })  # fmt: skip
    dataset = str(meta["dataset"])
    painted = ", ".join(f"{c} = {v}" for c, v in values.items())
    head = (
        f"# Crops to paint for dataset {dataset}, least sure first (annotate_next.csv).\n"
        f"# Paint each {folder}/CROP/labels.tif ({painted}; 0 background,\n"
        f"# {IGNORE} where you are not sure), then paste these entries under\n"
        f"# datasets.{dataset}.crops in your config (role train or val, never test) and run\n"
        "# the workflow again: it imports the new crops and trains again.\n"
    )
    text = head + yaml.safe_dump(entries, sort_keys=False, default_flow_style=None)
    write_bytes_atomic(folder / "crops.yaml", text.encode())
    manifest = {"dataset": dataset, "classes": classes, "values": values, "crops": entries}
    write_bytes_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    return entries


def _write_tiff(path: Path, data: np.ndarray) -> None:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, photometric="minisblack")
    write_bytes_atomic(path, buffer.getvalue())


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The export record of ``folder``; None when it is not an export folder."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def open_in_napari(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Open every crop of an export folder in napari (EM as images, labels as labels
    layers, each at its offset in the volume); when the window closes, write each
    labels layer back into its ``labels.tif``."""
    try:
        import napari
    except ImportError:
        raise InputDataError(
            f"{folder}: napari is not installed (pip install 'napari[all]'); or paint each "
            "CROP/labels.tif in any editor that keeps its shape and values"
        ) from None
    import tifffile

    viewer = napari.Viewer(title=f"sam4em: paint {folder}")
    layers = []
    for entry in manifest["crops"]:
        source = Path(entry["labels"]["source"])
        raw = tifffile.imread(source.with_name("raw.tif"))
        viewer.add_image(raw, name=f"{entry['name']} EM", translate=entry["offset"])
        layer = viewer.add_labels(
            tifffile.imread(source), name=entry["name"], translate=entry["offset"]
        )
        layers.append((layer, source))
    napari.run()
    for layer, source in layers:
        _write_tiff(source, np.asarray(layer.data, dtype=np.uint8))
