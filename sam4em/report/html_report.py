"""Build the self-contained HTML report of one dataset (images embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sam4em.analysis.settings import AnalysisSettings, flag_column
from sam4em.crops import Crop
from sam4em.errors import InputDataError
from sam4em.evaluate.run_evaluation import scored_crops, truth_and_mask
from sam4em.evaluate.settings import EvaluationSettings
from sam4em.io.atomic import write_bytes_atomic
from sam4em.io.zarr_store import PREDICTION, VOLUME, class_array
from sam4em.model.checkpoint import read_checkpoint
from sam4em.predict.pred_store import UNCERTAINTY
from sam4em.report import figures
from sam4em.report.annotate_next import region_means

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


#: test crops shown with an error map per class (all are scored)
MAX_CROP_FIGURES = 8


def _crops_text(crops: list[Crop]) -> str:
    """The test crops, as the Run section says them."""
    if len(crops) == 1 and crops[0].name == "split.test":
        return f"the held-out test slices {crops[0].z.start}–{crops[0].z.stop - 1}"
    listed = ", ".join(html.escape(c.describe()) for c in crops)
    return f"{len(crops)} held-out test crop(s) ({listed}; z, y, x, stops exclusive)"


def _per_crop_table(path: Path) -> str:
    """Dice per test crop and class, when there is more than one test crop."""
    if not path.is_file():
        return ""
    table = pd.read_csv(path)
    if table["crop"].nunique() < 2:
        return ""
    wide = table[table["metric"] == "dice"].pivot(index="crop", columns="class", values="value")
    classes = list(wide.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{html.escape(str(crop))}</th>"
        + "".join(f"<td>{wide.loc[crop, c]:.3f}</td>" for c in classes)
        + "</tr>"
        for crop in wide.index
    )
    return (
        "<p>Dice per test crop (the table above pools every crop's voxels and objects):</p>"
        f'<table id="metrics-per-crop"><tr><th>crop</th>{head}</tr>{rows}</table>'
    )


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


def _table(table_id: str, head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already HTML."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><tr>{th}</tr>{body}</table>'


def _median(values: pd.Series, fmt: str) -> str:
    return fmt.format(values.median()) if len(values.dropna()) else "–"


def _object_summary(tables: dict[str, pd.DataFrame]) -> str:
    """Per class: object count and the medians of the object table's new columns."""
    rows = [
        [html.escape(cls), str(len(t)), _median(t["volume_nm3"] / 1e9, "{:.4f}"),
         _median(t["confidence"], "{:.2f}"), _median(t["uncertainty"], "{:.2f}"),
         _median(t["surface_nm2"] / 1e6, "{:.3f}"), _median(t["elongation"], "{:.1f}"),
         _median(t["sphericity"], "{:.2f}"),
         f"{100 * t['truncated'].mean():.0f} %" if len(t) else "–"]
        for cls, t in tables.items()
    ]  # fmt: skip
    head = ["class", "objects", "median volume (µm³)", "median confidence",
            "median uncertainty (bits)", "median surface (µm²)", "median elongation",
            "median sphericity", "cut by the volume's border"]  # fmt: skip
    return (
        _table("objects", head, rows)
        + "<p>Every object's row is in <code>objects/{class}.csv</code> (README, “The "
        "object tables”).</p>"
    )


def _analysis_section(analysis: AnalysisSettings, res: Path, figure: Path) -> str:
    """The cross-class measures: a summary table and the distributions' histograms."""
    rows, panels = [], []
    for a, b in analysis.contacts:
        t = pd.read_csv(res / "analysis" / f"{a}.csv")
        share, flag = t[f"contact_{b}"], t[flag_column(a, b)].astype(bool)
        rows.append([
            html.escape(f"{a} → {b}"), str(len(t)),
            f"share of a {analysis.shell_nm:g} nm shell in {html.escape(b)}: median "
            f"{_median(share, '{:.2f}')}",
            f"{int(flag.sum())} ({100 * flag.mean():.0f} %) at ≥ {analysis.contact_share:g}"
            f" (<code>{flag_column(a, b)}</code>)" if len(t) else "–",
        ])  # fmt: skip
        panels.append((f"{a}: share of a {analysis.shell_nm:g} nm shell in {b}",
                       share.to_numpy(), f"contact_{b}", analysis.contact_share))  # fmt: skip
    for a, b in analysis.distances:
        t = pd.read_csv(res / "analysis" / f"{a}.csv")
        d = t[f"nearest_{b}_nm"]
        rows.append([
            html.escape(f"{a} → {b}"), str(len(t)),
            f"distance to the nearest {html.escape(b)}: median {_median(d, '{:.0f}')} nm",
            f"{int(d.isna().sum())} farther than {analysis.max_distance_nm:g} nm",
        ])  # fmt: skip
        panels.append((f"{a}: distance to the nearest {b}", d.to_numpy(np.float64),
                       f"nearest_{b}_nm (nm)", None))  # fmt: skip
    drawn = figures.analysis_distributions(panels, figure)
    if not rows:
        return ""
    return (
        "<h2>Between classes (whole volume)</h2>"
        + _table("contacts", ["pair", "objects", "measure", "flagged"], rows)
        + _img(drawn, "cross-class measures")
        + "<p>Per object in <code>analysis/{class}.csv</code>; the pairs, the shell width "
        "and the share are <code>analysis.*</code> keys (config/README.md).</p>"
    )


def _uncertainty_check(wrong: np.ndarray, doubt: np.ndarray) -> str:
    """Whether the uncertainty points at the errors: the rank correlation, over the test
    slices' regions, of the share of wrong voxels and the mean uncertainty."""
    if len(wrong) < 3 or np.ptp(wrong) == 0 or np.ptp(doubt) == 0:
        return ""
    rho = pd.Series(wrong).corr(pd.Series(doubt), method="spearman")
    return (
        f'<p id="uncertainty-check">Does the uncertainty point at the errors? Over the '
        f"{len(wrong)} regions of the test slices (the annotate-next regions), the share of "
        "wrong voxels and the mean uncertainty, both averaged over the classes, have a "
        f"rank correlation (Spearman) of <b>{rho:.2f}</b> (1: the least sure regions are "
        "exactly the most wrong ones; 0: no relation).</p>"
    )


def _annotate_next_section(path: Path, name: str, shown: int = 10) -> str:
    """The top of the annotate-next list and how to use it."""
    t = pd.read_csv(path, keep_default_na=False)
    classes = [c.removeprefix("objects_") for c in t.columns if c.startswith("objects_")]
    rows = [
        [str(r["rank"]), f"z {r['z0']}–{r['z1']}, y {r['y0']}–{r['y1']}, x {r['x0']}–{r['x1']}",
         html.escape(str(r["labelled"]) or "none"),
         f"{float(r['uncertainty']):.3f}",
         ", ".join(f"{html.escape(c)} {r[f'objects_{c}']}" for c in classes),
         f'<a href="{html.escape(str(r["neuroglancer"]))}">open</a>']
        for _, r in t.head(shown).iterrows()
    ]  # fmt: skip
    head = ["rank", "crop (voxels, stops exclusive)", "labelled in", "mean uncertainty (bits)",
            "predicted objects", "neuroglancer"]  # fmt: skip
    folder = html.escape(f"paint/{name}-round1")
    free = int((t["labelled"] == "").sum())
    return (
        "<h2>What to annotate next</h2><p>The candidate crops where the model is least "
        f"sure, ranked (all {len(t)} kept rows in <code>annotate_next.csv</code>; {free} of "
        "them share no voxel with a labelled crop: those are the ones to paint). The "
        "links open neuroglancer at the crop once "
        f"the results are served: <code>sam4em view results/{html.escape(name)} --serve"
        "</code>.</p>"
        + _table("annotate-next", head, rows)
        + "<p>To teach the model these places: <code>sam4em export-annotations results/"
        f"{html.escape(name)} --top 4 --out {folder}</code> writes each crop's EM and an "
        f"empty label image to paint, <code>sam4em view {folder}</code> opens them in "
        f"napari, and <code>{folder}/crops.yaml</code> holds the crop entries to paste "
        "under <code>datasets.NAME.crops</code>. The next run of the workflow imports "
        "them and trains again.</p>"
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
    analysis: AnalysisSettings,
) -> Path:
    """Write ``out`` (HTML) and its figures (PNG, also kept in ``figure_dir``); the
    report ends with ``config_text``, the configuration the run used; ``analysis``: what
    the cross-class measures and the annotate-next list were made with."""
    res = Path(results)
    fig_dir = Path(figure_dir)
    needed = ["eval/metrics.csv", "eval/metrics_per_slice.csv", "predictions.json",
              "annotate_next.csv"]  # fmt: skip
    needed += [f"analysis/{c}.csv" for c in analysis.analysed_classes()]
    missing = [n for n in needed if not (res / n).is_file()]
    if missing:
        raise InputDataError(
            f"{res}: no {', '.join(missing)}; run the workflow's steps before the report first"
        )
    metrics = pd.read_csv(res / "eval" / "metrics.csv")
    per_slice = pd.read_csv(res / "eval" / "metrics_per_slice.csv")
    vol, pred = VOLUME.open(res / "volume.zarr"), PREDICTION.open(res / "pred.zarr")
    crops = scored_crops(vol)
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
        f'<span id="z-gaps">{html.escape(z_gaps)}</span>; evaluated on '
        f"{_crops_text(crops)}, which training never saw. "
        + "; ".join(times)
        + ".</p>"
        + _model_summary([res / "models" / "stage1.pt", res / "models" / "stage2.pt"])
    )
    sections.append(
        "<h2>How well it segments</h2>"
        + _metric_table(metrics)
        + _per_crop_table(res / "eval" / "metrics_per_crop.csv")
    )
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
    parts = [
        "<h2>Where it is right and wrong</h2><p>Per class and test crop, the slice with "
        "the most annotation: in the middle, green is where sam4em and the annotation agree, "
        "magenta what sam4em predicts and the annotation lacks, orange what the annotation "
        "has and sam4em missed; on the right, the model's uncertainty (the binary entropy "
        "of its probability). Classes with small objects get zoomed crops below.</p>"
    ]
    unsure = pred[UNCERTAINTY]
    wrong, doubt = [], []  # per labelled class: region error rates and uncertainties
    for cls in dict.fromkeys(metrics["class"]):
        u_all = class_array(unsure, res / "pred.zarr" / UNCERTAINTY, cls)
        cls_wrong, cls_doubt = [], []
        for i, crop in enumerate(crops):
            truth, mask, _ = truth_and_mask(settings, vol, pred, cls, crop)
            u = np.asarray(u_all[crop.slices])
            cls_wrong.append(region_means(truth != mask, analysis.region_px))
            cls_doubt.append(region_means(u / 255, analysis.region_px))
            if i >= MAX_CROP_FIGURES:
                continue
            k = int(np.argmax(truth.sum(axis=(1, 2))))
            _, ys, xs = crop.slices
            raw = np.asarray(vol["raw"][crop.z.start + k, ys, xs])
            png = f"overlay_{cls}.png" if i == 0 else f"overlay_{cls}_{crop.name}.png"
            path = figures.error_maps(
                raw, truth[k], mask[k], u[k], crop.z.start + k, cls,
                fig_dir / "overlays" / png,
            )  # fmt: skip
            parts.append(_img(path, f"{cls} errors and uncertainty, {crop.name}"))
        wrong.append(np.concatenate(cls_wrong))
        doubt.append(np.concatenate(cls_doubt))
    parts.append(_uncertainty_check(np.mean(wrong, axis=0), np.mean(doubt, axis=0)))
    sections.append("".join(parts))
    tables = {
        c: pd.read_csv(res / "objects" / f"{c}.csv")
        for c in settings.classes
        if (res / "objects" / f"{c}.csv").is_file()
    }
    sections.append(
        "<h2>Objects (whole volume)</h2>"
        + _object_summary(tables)
        + _img(figures.size_histograms(tables, fig_dir / "object_sizes.png"), "object sizes")
    )
    sections.append(_analysis_section(analysis, res, fig_dir / "analysis.png"))
    sections.append(_annotate_next_section(res / "annotate_next.csv", name))
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
