"""Build the self-contained HTML report of one dataset (images embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sam4em.errors import InputDataError
from sam4em.evaluate.run_evaluation import truth_and_mask
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import PREDICTION, VOLUME
from sam4em.model.checkpoint import read_checkpoint
from sam4em.report import figures

# metric name -> (label a biologist reads, how to print it)
SHOWN = {
    "dice": ("Dice (voxel overlap, 1 = perfect)", "{:.3f}"),
    "iou": ("IoU (intersection over union)", "{:.3f}"),
    "precision": ("Precision (share of predicted voxels that are right)", "{:.3f}"),
    "recall": ("Recall (share of annotated voxels found)", "{:.3f}"),
    "f1_iou50": ("Object F1, objects matched at IoU ≥ 0.5", "{:.3f}"),
    "f1_iou75": ("Object F1, objects matched at IoU ≥ 0.75", "{:.3f}"),
    "detection_f1": ("Detection F1 (object found if it overlaps)", "{:.3f}"),
    "objects_true": ("Annotated objects", "{:.0f}"),
    "objects_predicted": ("Predicted objects", "{:.0f}"),
    "splits": ("Annotated objects split in two or more", "{:.0f}"),
    "merges": ("Predicted objects merging two or more", "{:.0f}"),
    "consistency_predicted": ("Slice-to-slice Dice, prediction", "{:.3f}"),
    "consistency_true": ("Slice-to-slice Dice, annotation", "{:.3f}"),
}


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _metric_table(metrics: pd.DataFrame) -> str:
    wide = metrics.pivot(index="metric", columns="class", values="value")
    classes = list(dict.fromkeys(metrics["class"]))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = []
    for key, (label, fmt) in SHOWN.items():
        if key in wide.index:
            cells = "".join(f"<td>{fmt.format(wide.loc[key, c])}</td>" for c in classes)
            rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return f'<table id="metrics"><tr><th>metric</th>{head}</tr>{"".join(rows)}</table>'


def _model_summary(models: list[Path]) -> str:
    rows = []
    for path in models:
        if not path.is_file():
            continue
        payload = read_checkpoint(path)
        extra = payload.get("extra", {})
        cfg = payload["model_config"]
        val = extra.get("val_dice") or {}
        chosen = extra.get("thresholds") or {}
        rows.append(
            f"<tr><td>{html.escape(path.name)}</td><td>{html.escape(str(cfg['preset']))} "
            f"@ {cfg['img_size']} px, scale {extra.get('scale', 1.0):g}</td>"
            f"<td>{extra.get('step', '')}</td><td>"
            + ", ".join(f"{html.escape(c)} {v:.3f}" for c, v in val.items())
            + "</td><td>"
            + ", ".join(f"{html.escape(c)} {v:.2f}" for c, v in chosen.items())
            + "</td></tr>"
        )
    head = (
        "<tr><th>checkpoint</th><th>encoder</th><th>best step</th><th>val Dice (at 0.5)</th>"
        "<th>thresholds chosen on val</th></tr>"
    )
    return f'<table id="models">{head}{"".join(rows)}</table>'


def _stage_choice(summary: dict) -> str:
    """Which stage's weights the predictions come from, and the val scores that chose."""
    choice = summary.get("model_choice")
    if not choice:
        return ""
    stage = choice["model_stage"]
    ran = "stage 2 weights, 3D memory on" if stage == 2 else "stage 1 weights, memory off"
    if choice.get("skipped"):
        return (
            f'<p id="model-choice">Predictions come from the {ran}, in 2D: stage 2 was '
            f"skipped because {html.escape(choice['reason'])} (the z gaps above; "
            "<code>datasets.NAME.z_index</code> in config/README.md).</p>"
        )
    return (
        f'<p id="model-choice">Predictions come from the {ran}: on the same val slices, '
        f"stage 2 with its memory scored mean Dice {choice['stage2_val_dice']:.3f} and the "
        f"stage-1 weights slice by slice {choice['stage1_val_dice']:.3f}; stage 2 is kept "
        f"only when it is ahead by at least {choice['min_gain']:g} "
        "(<code>train.stage2_min_gain</code>).</p>"
    )


def _training_minutes(history: Path) -> float | None:
    if not history.is_file():
        return None
    table = pd.read_csv(history)
    return float(table["elapsed_s"].dropna().max()) / 60 if "elapsed_s" in table else None


def build_report(
    settings: EvaluationSettings,
    name: str,
    results: str | os.PathLike[str],
    out: str | os.PathLike[str],
    figure_dir: str | os.PathLike[str],
    config_text: str,
) -> Path:
    """Write ``out`` (HTML) and its figures (PNG, also kept in ``figure_dir``); the
    report ends with ``config_text``, the configuration the run used."""
    res = Path(results)
    fig_dir = Path(figure_dir)
    needed = ["eval/metrics.csv", "eval/metrics_per_slice.csv", "predictions.json"]
    missing = [n for n in needed if not (res / n).is_file()]
    if missing:
        raise InputDataError(
            f"{res}: no {', '.join(missing)}; run the stitch and evaluate steps first"
        )
    metrics = pd.read_csv(res / "eval" / "metrics.csv")
    per_slice = pd.read_csv(res / "eval" / "metrics_per_slice.csv")
    vol, pred = VOLUME.open(res / "volume.zarr"), PREDICTION.open(res / "pred.zarr")
    z = settings.test
    sections = []
    summary = json.loads((res / "predictions.json").read_text())
    times = [
        f"stage {s} training: {m:.1f} min"
        for s in (1, 2)
        if (m := _training_minutes(res / "models" / f"stage{s}_history.csv")) is not None
    ] + [f"inference (all blocks): {summary['block_seconds'] / 60:.1f} min"]
    voxel = vol.attrs["sam4em"]["voxel_size_nm"]
    z_gaps = vol.attrs["sam4em"].get("z_gaps", "no gaps in z")
    sections.append(
        "<h2>Run</h2><p>"
        f"Volume {' × '.join(map(str, summary['shape']))} voxels (z, y, x) of "
        f"{' × '.join(f'{v:g}' for v in voxel)} nm, "
        f'<span id="z-gaps">{html.escape(z_gaps)}</span>; evaluated on the held-out test slices '
        f"{z.start}–{z.stop - 1}, which training never saw. "
        + "; ".join(times)
        + ".</p>"
        + _model_summary([res / "models" / "stage1.pt", res / "models" / "stage2.pt"])
    )
    sections.append("<h2>How well it segments</h2>" + _metric_table(metrics))
    sections.append(
        "<h2>Slice by slice</h2>"
        + _img(figures.per_slice_dice(per_slice, fig_dir / "per_slice_dice.png"), "per-slice Dice")
    )
    curves = [res / "models" / f"stage{s}_curves.png" for s in (1, 2)]
    sections.append(
        "<h2>Training</h2>"
        + _stage_choice(summary)
        + "".join(_img(p, p.stem) for p in curves if p.is_file())
    )
    parts = ["<h2>Examples</h2>"]
    for cls in dict.fromkeys(metrics["class"]):
        truth, mask = truth_and_mask(settings, vol, pred, cls)
        k = int(np.argmax(truth.sum(axis=(1, 2))))
        raw = np.asarray(vol["raw"][z.start + k])
        path = figures.overlays(
            raw, truth[k], mask[k], z.start + k, cls, fig_dir / "overlays" / f"overlay_{cls}.png"
        )
        parts.append(_img(path, f"{cls} overlay"))
    sections.append("".join(parts))
    tables = {
        c: pd.read_csv(res / "objects" / f"{c}.csv")
        for c in settings.classes
        if (res / "objects" / f"{c}.csv").is_file()
    }
    sections.append(
        "<h2>Object sizes (whole volume)</h2>"
        + _img(figures.size_histograms(tables, fig_dir / "object_sizes.png"), "object sizes")
    )
    sections.append("<h2>Configuration</h2><pre>" + html.escape(config_text) + "</pre>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>sam4em report: {html.escape(name)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 10px;text-align:left}img{max-width:100%;display:block;margin:1em 0}"
        "pre{background:#f6f6f6;padding:1em;font-size:12px}</style></head><body>"
        f"<h1>sam4em: {html.escape(name)}</h1>" + "".join(sections) + "</body></html>"
    )
    write_bytes_atomic(out, page.encode())
    return Path(out)
