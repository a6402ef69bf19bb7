"""Test-time views on a finished run: val and test Dice and seconds per view set; JSON.

Scores the model of a finished pipeline run (``results/{dataset}``) with one view (TTA
off), the four quarter turns, the four flips of the Klein group and all eight
symmetries (``inference.tta``), each view with its own memory, at the thresholds chosen
on val with one view (as the pipeline does). The val slices are predicted after the
``inference.warmup`` slices before them, the test slices likewise; the choice is made on
val, the test column is for the record. Whole-plane windows, as one whole-volume block.

Usage: .venv/bin/python benchmarks/tta_views.py [--results results/vnc] [--warmup 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sam4em.io.zarr_store import open_group
from sam4em.model.checkpoint import load_checkpoint
from sam4em.model.lora import merge_lora
from sam4em.predict.stack_predictor import (
    PredictSettings,
    StackPredictor,
    dihedral,
    undo_dihedral,
)

VIEW_SETS = {"one": (0,), "quarter_turns": (0, 1, 2, 3), "flips": (0, 2, 4, 6),
             "all_eight": tuple(range(8))}  # fmt: skip


class ViewSetPredictor(StackPredictor):
    """The pipeline's predictor with a chosen set of dihedral views."""

    def __init__(self, *args, views: tuple[int, ...], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.views = views

    def _tile_probs(self, tiles, bank):
        batch = torch.cat([dihedral(tiles, k) for k in self.views])
        probs = self.model.step(batch, bank).final.float().sigmoid()
        parts = probs.chunk(len(self.views))
        return torch.stack(
            [undo_dihedral(p, k) for k, p in zip(self.views, parts, strict=True)]
        ).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/vnc"))
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()
    model, payload = load_checkpoint(args.results / "models" / "stage2.pt")
    merge_lora(model.image_encoder.vit)
    extra, classes = payload["extra"], list(model.config.classes)
    volume = open_group(args.results / "volume.zarr")
    raw = np.asarray(volume["raw"])
    split = volume.attrs["sam4em"]["split"]
    settings = PredictSettings(scale=float(extra.get("scale", 1.0)))
    report: dict[str, object] = {"results": str(args.results), "thresholds": extra["thresholds"],
                                 "torch_threads": torch.get_num_threads()}  # fmt: skip
    for name, views in VIEW_SETS.items():
        predictor = ViewSetPredictor(model, settings, torch.device("cpu"), views=views)
        t0, scores = time.perf_counter(), {}
        for part in ("val", "test"):
            first, last = split[part]
            z0 = max(0, first - args.warmup)
            probs = predictor.predict(raw[z0 : last + 1])[:, first - z0 :]
            dice = {}
            for i, cls in enumerate(classes):
                mask = probs[i] >= extra["thresholds"][cls]
                truth = np.asarray(volume[f"labels/{cls}/0"][first : last + 1]) > 0
                total = mask.sum() + truth.sum()
                dice[cls] = round(float(2 * (mask & truth).sum() / total) if total else 1.0, 4)
            dice["mean"] = round(float(np.mean([dice[c] for c in classes])), 4)
            scores[part] = dice
        scores["seconds"] = round(time.perf_counter() - t0, 1)
        report[name] = scores
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
