"""What to annotate next: the regions of the volume where the model is least sure.

Each slice is cut into regions of ``analysis.annotate_region_px`` pixels square (the
last ones in y and x smaller). A region's score is the mean, over the classes, of the
mean voxel uncertainty of the class (``pred.zarr/uncertainty/{class}``, in bits: 0 sure,
1 at probability 0.5). Regions are ranked by it, highest first; each row also counts the
predicted objects of every class in the region, says which split (if any) already
labels its slice, and links to neuroglancer at the region's centre. The volume is read
one slice at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em.analysis.settings import AnalysisSettings
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import INSTANCES, PREDICTION, class_array
from sam4em.predict.pred_store import UNCERTAINTY
from sam4em.progress import progress
from sam4em.report import SERVE_HOST, SERVE_PORT
from sam4em.report.viewer import neuroglancer_url

#: the links' data URL: where ``sam4em view --serve`` serves a results folder by default
SERVED_AT = f"http://{SERVE_HOST}:{SERVE_PORT}"


def region_edges(size: int, step: int) -> list[tuple[int, int]]:
    """(start, stop) of the regions along an axis of ``size`` pixels."""
    return [(a, min(a + step, size)) for a in range(0, size, step)]


def slice_regions(
    uncertainty: Mapping[str, np.ndarray], objects: Mapping[str, np.ndarray], step: int
) -> list[dict[str, Any]]:
    """One row per region of one slice: each class's mean uncertainty (bits) and object
    count, from its uint8 ``uncertainty`` (x 255) and instance ``objects`` images."""
    h, w = next(iter(uncertainty.values())).shape
    rows: list[dict[str, Any]] = [
        {"y0": y0, "y1": y1, "x0": x0, "x1": x1}
        for y0, y1 in region_edges(h, step)
        for x0, x1 in region_edges(w, step)
    ]
    for cls, u in uncertainty.items():
        for row, mean in zip(rows, region_means(u[None], step), strict=True):
            row[f"uncertainty_{cls}"] = mean / 255
    for cls, ids in objects.items():
        for row in rows:
            found = np.unique(ids[row["y0"] : row["y1"], row["x0"] : row["x1"]])
            row[f"objects_{cls}"] = int(np.count_nonzero(found))
    return rows


def region_means(stack: np.ndarray, step: int) -> np.ndarray:
    """The mean of each region (:func:`region_edges`) of every slice of ``stack``, slice
    by slice, row by row: one value per region."""
    _, h, w = stack.shape
    return np.array([
        float(np.mean(stack[k, y0:y1, x0:x1]))
        for k in range(stack.shape[0])
        for y0, y1 in region_edges(h, step)
        for x0, x1 in region_edges(w, step)
    ])  # fmt: skip


def split_of(z: int, splits: Mapping[str, range]) -> str:
    """The split whose slices include ``z`` ('' when none labels it)."""
    return next((name for name, zs in splits.items() if z in zs), "")


def annotate_next(
    settings: AnalysisSettings,
    pred: str | os.PathLike[str],
    instances: str | os.PathLike[str],
    layers: dict[str, Any],
    splits: Mapping[str, range],
    out: str | os.PathLike[str],
    data_url: str = SERVED_AT,
) -> pd.DataFrame:
    """Rank the regions of a dataset's prediction (``pred``, ``instances``: its stores;
    ``layers``: its layers record, for the links; ``splits``: the slices each split
    labels) and write the top ``settings.rows`` to ``out`` (CSV); returns them."""
    pred_root, inst_root = PREDICTION.open(pred), INSTANCES.open(instances)
    classes = list(pred_root.attrs["sam4em"]["classes"])
    unsure = {c: class_array(pred_root[UNCERTAINTY], Path(pred) / UNCERTAINTY, c) for c in classes}
    ids = {c: class_array(inst_root, instances, c) for c in classes if c in inst_root}
    depth = next(iter(unsure.values())).shape[0]
    rows = []
    for z in progress(range(depth), desc="annotate-next", unit="slice"):
        found = slice_regions(
            {c: np.asarray(a[z]) for c, a in unsure.items()},
            {c: np.asarray(a[z]) for c, a in ids.items()},
            settings.region_px,
        )
        rows += [{"z": z, **r} for r in found]
    table = pd.DataFrame(rows)
    table.insert(1, "split", [split_of(int(z), splits) for z in table["z"]])
    scores = table[[f"uncertainty_{c}" for c in classes]].mean(axis=1)
    table.insert(2, "uncertainty", scores)
    table = table.sort_values(["uncertainty", "z", "y0", "x0"], ascending=[False, True, True, True])
    table = table.head(settings.rows).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["neuroglancer"] = [
        neuroglancer_url(
            layers, data_url, position=(r.z + 0.5, (r.y0 + r.y1) / 2, (r.x0 + r.x1) / 2)
        )
        for r in table.itertuples()
    ]
    write_bytes_atomic(out, table.to_csv(index=False, float_format="%.4g").encode())
    return table
