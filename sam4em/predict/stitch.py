"""Finish a prediction store: check every block is done, add viewer levels, summarise.

Writes each class's viewer levels ``{class}/1``, ``{class}/2`` ... (and those of its
uncertainty image, ``uncertainty/{class}``) beyond those the block jobs wrote
(:mod:`sam4em.io.pyramid`), OME-NGFF metadata for all levels, consolidates the zarr
metadata, and draws a quick-look PNG of a few slices. It reads no setting: its
summary and figure cut each class at the threshold chosen on val for the model, and the
store is marked complete last, once everything else is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.blocks.plan import load_plan, read_plan
from sam4em.config import threshold_level
from sam4em.errors import InputDataError
from sam4em.io.atomic import write_json_atomic
from sam4em.io.pyramid import block_pyramid, write_pyramid
from sam4em.io.zarr_store import LEVEL0, PREDICTION, VOLUME
from sam4em.predict.pred_store import image_groups, mark_complete
from sam4em.predict.quicklook import draw_quicklook


def _one_source(
    pred: str | os.PathLike[str], records: list[dict[str, Any]], volume_id: str
) -> dict[str, str]:
    """The model and volume import the block markers ``records`` name; an InputDataError
    when blocks come from different models, or from another import of the volume."""
    models = sorted({str(r.get("model")) for r in records})
    if len(models) > 1:
        raise InputDataError(
            f"{pred}: blocks were predicted by {len(models)} different models; "
            "delete the block markers and predict again with one model"
        )
    stale = [r["block"] for r in records if str(r.get("volume", "")) != volume_id]
    if stale:
        raise InputDataError(
            f"{pred}: block(s) {', '.join(stale[:5])} were predicted from an earlier import "
            "of the volume; predict them again"
        )
    return {"model": models[0] if models else "", "volume": volume_id}


def stitch(
    volume: str | os.PathLike[str],
    pred: str | os.PathLike[str],
    plan: str | os.PathLike[str],
    markers: str | os.PathLike[str],
    summary: str | os.PathLike[str],
    figure: str | os.PathLike[str],
) -> dict[str, Any]:
    """Check completeness, write the downsampled levels, the figure and the summary JSON
    (masks cut at the model's val-chosen thresholds), then mark the store complete."""
    import zarr

    planned, block_shape = load_plan(plan), read_plan(plan).settings.block_shape
    missing = [b.id for b in planned if not (Path(markers) / f"{b.id}.done").is_file()]
    if missing:
        raise InputDataError(
            f"{pred}: {len(missing)} block(s) not done yet ({', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}); run their predict-block jobs first"
        )
    vol = VOLUME.open(volume)
    raw, voxel = vol["raw"], vol.attrs["sam4em"]["voxel_size_nm"]
    records = [json.loads((Path(markers) / f"{b.id}.done").read_text()) for b in planned]
    made_from = _one_source(pred, records, str(vol.attrs["sam4em"].get("import_id", "")))
    root = PREDICTION.open(pred, mode="r+")
    classes = root.attrs["sam4em"]["classes"]
    levels = {c: threshold_level(None, c, root.attrs.get("thresholds")) for c in classes}
    stats: dict[str, dict[str, float]] = {}
    for cls in classes:
        group = root[cls]
        level0 = group[LEVEL0]
        shape = level0.shape
        total, above = 0.0, 0
        for z in range(shape[0]):
            plane = np.asarray(level0[z])
            total += float(plane.mean())
            above += int((plane >= levels[cls]).sum())
        stats[cls] = {
            "mean_probability": round(total / shape[0] / 255, 5),
            "threshold": round(levels[cls] / 255, 4),
            "fraction_above_threshold": round(above / float(np.prod(shape)), 5),
        }
    for name, group in image_groups(root, classes):  # levels past the blocks' ones
        level0 = group[LEVEL0]
        done = len(block_pyramid(level0.shape, level0.chunks, block_shape)[0]) - 1
        write_pyramid(group, name, voxel, "mean", done=done)
    slices = sorted({0, raw.shape[0] // 2, raw.shape[0] - 1})
    draw_quicklook(raw, {c: root[f"{c}/{LEVEL0}"] for c in classes}, levels, slices, figure)
    record = {
        "volume": str(volume),
        "pred": str(pred),
        "shape": list(raw.shape),
        "classes": classes,
        "blocks": len(planned),
        "block_seconds": round(sum(r["seconds"] for r in records), 2),
        # the model the blocks ran (one for all, checked above): stage, memory, and why
        "model_stage": records[0].get("model_stage"),
        "memory": records[0].get("memory"),
        "model_choice": records[0].get("model_choice"),
        "classes_stats": stats,
    }
    write_json_atomic(summary, record)
    # every block is there, from one model and this import, and everything else is
    # written: mark it, then consolidate (the mark is a root attribute, so it goes in
    # before the consolidated metadata)
    mark_complete(root, {**made_from, "blocks": len(planned)})
    zarr.consolidate_metadata(str(pred))
    return record
