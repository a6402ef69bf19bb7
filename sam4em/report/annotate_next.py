"""What to annotate next: the candidate crops where the model is least sure.

The volume is cut into candidate crops of ``analysis.annotate_box`` voxels (z, y, x;
the last ones along an axis moved back to end flush); column ``labelled`` names the
labelled crops (any role, split ranges included) a candidate shares voxels with, and
only candidates with none are exported to paint (the kept rows take those first). A
candidate's
score is the mean, over the classes, of the mean voxel uncertainty of the class
(``pred.zarr/uncertainty/{class}``, in bits: 0 sure, 1 at probability 0.5). Candidates
are ranked by it, highest first; each row also counts the predicted objects of every
class in the box and links to neuroglancer at its centre. The volume is read one slice
at a time. ``sam4em export-annotations`` turns the top rows into crops to paint
(:mod:`sam4em.report.paint`).

:func:`region_means` also serves the report's check of the uncertainty against the
errors, over square regions of the test crops' slices.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em.analysis.settings import AnalysisSettings
from sam4em.crops import Crop
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


def candidate_edges(size: int, step: int) -> list[tuple[int, int]]:
    """(start, stop) of the candidate crops along an axis of ``size``: every ``step``
    voxels, the last one moved back to end flush (an axis shorter than ``step``: one)."""
    if size <= step:
        return [(0, size)]
    starts = list(range(0, size - step + 1, step))
    if starts[-1] != size - step:
        starts.append(size - step)
    return [(a, a + step) for a in starts]


def candidate_crops(shape: tuple[int, ...], box: tuple[int, int, int]) -> list[Crop]:
    """Every candidate crop of ``box`` voxels over a volume of ``shape`` (z, y, x)."""
    edges = [candidate_edges(int(n), int(b)) for n, b in zip(shape, box, strict=True)]
    return [
        Crop(f"z{z0}y{y0}x{x0}", "train", (z0, y0, x0), (z1, y1, x1))
        for z0, z1 in edges[0]
        for y0, y1 in edges[1]
        for x0, x1 in edges[2]
    ]


def annotate_next(
    settings: AnalysisSettings,
    pred: str | os.PathLike[str],
    instances: str | os.PathLike[str],
    layers: dict[str, Any],
    labelled: Sequence[Crop],
    out: str | os.PathLike[str],
    data_url: str = SERVED_AT,
) -> pd.DataFrame:
    """Rank the candidate crops of a dataset's prediction (``pred``, ``instances``: its
    stores; ``layers``: its layers record, for the links) and write the top
    ``settings.rows`` to ``out`` (CSV); returns them. Column ``labelled`` names the
    ``labelled`` crops a candidate shares voxels with ('' for none: the ones to paint)."""
    pred_root, inst_root = PREDICTION.open(pred), INSTANCES.open(instances)
    classes = list(pred_root.attrs["sam4em"]["classes"])
    unsure = {c: class_array(pred_root[UNCERTAINTY], Path(pred) / UNCERTAINTY, c) for c in classes}
    ids = {c: class_array(inst_root, instances, c) for c in classes if c in inst_root}
    shape = next(iter(unsure.values())).shape
    taken = [c.resolved(shape) for c in labelled]
    boxes = candidate_crops(shape, settings.box)
    sums = np.zeros((len(boxes), len(classes)))
    found: list[dict[str, set[int]]] = [{c: set() for c in ids} for _ in boxes]
    by_slice: dict[int, list[int]] = {}
    for i, b in enumerate(boxes):
        for z in b.z:
            by_slice.setdefault(z, []).append(i)
    for z in progress(sorted(by_slice), desc="annotate-next", unit="slice"):
        planes = {c: np.asarray(a[z]) for c, a in unsure.items()}
        objects = {c: np.asarray(a[z]) for c, a in ids.items()}
        for i in by_slice[z]:
            _, ys, xs = boxes[i].slices
            for ci, c in enumerate(classes):
                sums[i, ci] += float(planes[c][ys, xs].sum(dtype=np.float64))
            for c, plane in objects.items():
                found[i][c].update(np.unique(plane[ys, xs]).tolist())
    rows = []
    for i, b in enumerate(boxes):
        (z0, z1), (y0, y1), (x0, x1) = b.box
        row: dict[str, Any] = {"z0": z0, "z1": z1, "y0": y0, "y1": y1, "x0": x0, "x1": x1}
        row["labelled"] = " ".join(c.name for c in taken if b.overlaps(c))
        voxels = float(np.prod(b.shape))
        row |= {f"uncertainty_{c}": sums[i, ci] / voxels / 255 for ci, c in enumerate(classes)}
        row |= {f"objects_{c}": len(found[i][c] - {0}) for c in ids}
        rows.append(row)
    columns = ["z0", "z1", "y0", "y1", "x0", "x1", "labelled"]
    table = pd.DataFrame(rows, columns=columns + [f"uncertainty_{c}" for c in classes]
                         + [f"objects_{c}" for c in ids])  # fmt: skip
    table.insert(7, "uncertainty", table[[f"uncertainty_{c}" for c in classes]].mean(axis=1))
    order, ascending = ["uncertainty", "z0", "y0", "x0"], [False, True, True, True]
    table = table.sort_values(order, ascending=ascending)
    # the free candidates (no labelled crop touches them) come into the kept rows first:
    # they are what to paint; the rows stay ranked by uncertainty
    free = table[table["labelled"] == ""].head(settings.rows)
    table = pd.concat([free, table[table["labelled"] != ""]]).head(settings.rows)
    table = table.sort_values(order, ascending=ascending).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["neuroglancer"] = [
        neuroglancer_url(
            layers, data_url, position=((r.z0 + r.z1) / 2, (r.y0 + r.y1) / 2, (r.x0 + r.x1) / 2)
        )
        for r in table.itertuples()
    ]
    write_bytes_atomic(out, table.to_csv(index=False, float_format="%.4g").encode())
    return table
