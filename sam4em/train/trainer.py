"""The training loop shared by both stages.

Stage 1 feeds shuffled 2D tiles through the model with the memory off. Stage 2 feeds
z-sequences slice by slice through ``model.step``, so each slice sees the memory of the
model's own (detached) predictions on the previous slices, as at inference.

A run keeps ``last.pt`` (weights, optimiser, schedule, random states, step, history)
every ``save_every`` steps and ``best.pt`` (best mean val Dice); a killed run started
again with the same settings continues from ``last.pt`` and ends where an uninterrupted
run would.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam4em.io.atomic import write_bytes_atomic
from sam4em.model.checkpoint import read_checkpoint, save_checkpoint, trainable_state
from sam4em.model.device import autocast, bf16_native, pick_device, to_device
from sam4em.model.sam4em_model import SAM4EM, SegmentationOutput
from sam4em.progress import StepProgress
from sam4em.train.feeder import BatchFeeder, make_batch
from sam4em.train.history import write_curves, write_history
from sam4em.train.losses import UNKNOWN, bce_dice, labelled_pixels
from sam4em.train.schedule import lr_factor, run_progress
from sam4em.train.settings import StageSettings
from sam4em.train.tile_data import TileSet

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a stage ended."""

    step: int
    best_step: int
    best_score: float
    elapsed_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _param_groups(model: SAM4EM, s: StageSettings) -> list[dict[str, Any]]:
    encoder, memory, rest = [], [], []
    for name, p in model.named_parameters():
        if not model.is_trained(name):
            p.requires_grad = False
            continue
        if name.startswith("memory_"):
            p.requires_grad = s.stage == 2  # stage 1: memory off
            if p.requires_grad:
                memory.append(p)
        elif name.startswith("image_encoder."):
            p.requires_grad = s.lora_lr > 0
            if p.requires_grad:
                encoder.append(p)
        else:
            p.requires_grad = True
            rest.append(p)
    groups = [{"params": rest, "lr": s.lr, "base_lr": s.lr}]
    for params, lr in ((memory, s.memory_lr), (encoder, s.lora_lr)):
        if params:
            groups.append({"params": params, "lr": lr, "base_lr": lr})
    return groups


def _run(model: SAM4EM, images: torch.Tensor, stage: int) -> list[SegmentationOutput]:
    if stage == 1:
        return [model(images[:, 0])]
    return model.forward_sequence(images)


def _loss(
    outputs: list[SegmentationOutput],
    labels: torch.Tensor,
    labelled: torch.Tensor,
    s: StageSettings,
) -> tuple[torch.Tensor, float, float]:
    """The weighted two-decoder loss, averaged over the slices that hold a labelled
    pixel (a sequence's raw-only warm-up slices hold none)."""
    scored = list(range(len(outputs)))
    if len(outputs) > 1:
        scored = [t for t in scored if labelled_pixels(labels[:, t], labelled)] or scored
    l1 = sum(bce_dice(outputs[t].stage1, labels[:, t], labelled) for t in scored) / len(scored)
    l2 = sum(bce_dice(outputs[t].stage2, labels[:, t], labelled) for t in scored) / len(scored)
    w1, w2 = s.stage_weights
    return w1 * l1 + w2 * l2, float(l1.detach()), float(l2.detach())


@dataclass(frozen=True)
class StepPath:
    """How the training step runs (what it computes is the same either way):
    ``StepPath()`` is the fast path, ``StepPath.plain()`` the one before it, which
    ``benchmarks/model_speed.py`` times beside it."""

    channels_last: bool = True  # convolutions on NHWC weights and maps (oneDNN, cuDNN)
    fused: bool = True  # a fused AdamW and a foreach gradient norm: no per-tensor loop
    ahead: bool = True  # the next batch is drawn and augmented on a thread meanwhile

    @classmethod
    def plain(cls) -> StepPath:
        """NCHW, a per-tensor AdamW loop, batches prepared between steps."""
        return cls(channels_last=False, fused=False, ahead=False)


def make_optimizer(model: SAM4EM, s: StageSettings, fused: bool = True) -> torch.optim.AdamW:
    """AdamW over what stage ``s.stage`` trains (the rest is frozen), one learning rate
    per group: heads, memory (stage 2) and encoder; ``fused``: one kernel for all."""
    return torch.optim.AdamW(
        _param_groups(model, s), weight_decay=s.weight_decay, fused=fused or None
    )


def optimise(
    model: SAM4EM,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    s: StageSettings,
    device: torch.device,
    bf16: bool | None = None,
) -> tuple[float, float, float]:
    """One optimisation step on ``batch`` (images, labels, labelled as from
    :func:`~sam4em.train.feeder.make_batch`), at the optimizer's current rates; (loss,
    stage-1 loss, stage-2 loss). ``bf16`` as in :func:`sam4em.model.device.autocast`."""
    images, labels, labelled = (to_device(t, device) for t in batch)
    with autocast(device, bf16):
        outputs = _run(model, images, s.stage)
    loss, l1, l2 = _loss(outputs, labels, labelled, s)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    foreach = bool(optimizer.defaults.get("fused")) or None  # the fused path: one norm kernel
    clip_gradients(params, s.grad_clip, foreach)
    optimizer.step()
    return loss.item(), l1, l2


def clip_gradients(params: list[torch.Tensor], max_norm: float, foreach: bool | None) -> None:
    """``torch.nn.utils.clip_grad_norm_``, the same gradients to the bit, without its pass
    that multiplies every gradient by a factor of 1 when the norm is within ``max_norm``."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=foreach)
    if not max_norm / (norm + 1e-6) >= 1:  # PyTorch's clip factor (NaN too) before its clamp
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=foreach)


# probability levels among which the per-class thresholds are chosen on val
THRESHOLD_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


@torch.no_grad()
def val_dice_table(
    model: torch.nn.Module,
    data: TileSet,
    s: StageSettings,
    device: torch.device,
    predict: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
    levels: tuple[float, ...] = (0.5,),
) -> dict[str, np.ndarray]:
    """Per-class Dice, one value per probability level, of the last slice of each example.

    ``predict`` maps images (B, T, 1, S, S) to logits (B, C, S, S) per slice; the default
    runs ``model`` as a SAM4EM of stage ``s.stage``. Only the last slice of an example is
    scored (earlier slices of a val window are its warm-up). Classes no example labels
    are left out. The model is in eval mode meanwhile.
    """
    if predict is None:
        predict = lambda x: [o.final for o in _run(model, x, s.stage)]  # noqa: E731
    was_training = model.training
    model.eval()
    n_cls, cut = len(data.classes), torch.tensor(levels)[:, None, None, None, None]
    inter = torch.zeros((n_cls, len(levels)), dtype=torch.float64)
    total = torch.zeros_like(inter)
    seen = torch.zeros(n_cls, dtype=torch.bool)
    for start in range(0, len(data), s.batch_size):
        idx = np.arange(start, min(start + s.batch_size, len(data)))
        images, labels, labelled = make_batch(data, idx, s, None)
        with autocast(device):
            probs = torch.sigmoid(predict(to_device(images, device))[-1].float()).cpu()
        pred = probs[None] >= cut  # (K, B, C, S, S)
        last = labels[:, -1]
        mask = (labelled[:, :, None, None] & (last != UNKNOWN))[None]
        target = (last == 1)[None]
        inter += (pred & target & mask).sum(dim=(1, 3, 4)).T.double()
        total += ((pred & mask).sum(dim=(1, 3, 4)) + (target & mask).sum(dim=(1, 3, 4))).T.double()
        seen |= mask[0].any(dim=(0, 2, 3))
    model.train(was_training)
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return {c: dice[i].numpy() for i, c in enumerate(data.classes) if seen[i]}


def evaluate_dice(
    model: torch.nn.Module,
    data: TileSet,
    s: StageSettings,
    device: torch.device,
    predict: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
) -> dict[str, float]:
    """Per-class Dice at probability 0.5 (see :func:`val_dice_table`)."""
    table = val_dice_table(model, data, s, device, predict)
    return {c: float(v[0]) for c, v in table.items()}


def choose_thresholds(table: dict[str, np.ndarray], levels: tuple[float, ...]) -> dict[str, float]:
    """Per class, the level of best val Dice (ties: the one nearest 0.5)."""
    out = {}
    for c, dice in table.items():
        best = np.flatnonzero(dice >= dice.max() - 1e-6)
        out[c] = float(levels[min(best, key=lambda i: abs(levels[i] - 0.5))])
    return out


def fingerprint(
    model: SAM4EM, s: StageSettings, train: TileSet, val: TileSet | None, init: str
) -> str:
    """Identity of a run: settings, model config, data and starting weights."""
    data = {
        "settings": s.to_dict(),
        "model": model.config.to_dict() | {"checkpoint": model.base_identity},
        "train": [data_identity(m) for _, _, m in train.groups],
        "val": [data_identity(m) for _, _, m in val.groups] if val else [],
        "init": init,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def data_identity(meta: dict[str, Any]) -> list[Any]:
    """What a tile store was cut from: dataset, role, slices, its crops' boxes and the
    volume's import (a new crop or new pixels make another run, never a resumed one)."""
    crops = [(c["name"], c["start"], c["stop"]) for c in meta.get("crops", [])]
    return [meta["dataset"], meta["split"], meta["slices"], crops, meta.get("import_id")]


def _save_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _store_thresholds(
    model: SAM4EM, best_path: Path, val: TileSet, s: StageSettings, device: torch.device
) -> dict[str, float]:
    """Load the best weights, choose per-class thresholds on val, store them with them."""
    payload = read_checkpoint(best_path)
    model.load_state_dict(payload["state_dict"], strict=False)
    table = val_dice_table(model, val, s, device, levels=THRESHOLD_LEVELS)
    thresholds = choose_thresholds(table, THRESHOLD_LEVELS)
    extra = payload["extra"] | {
        "thresholds": thresholds,
        "val_dice_at_thresholds": {c: float(table[c].max()) for c in table},
    }
    save_checkpoint(model, best_path, extra=extra)
    return thresholds


class _StageRun:
    """The state of one stage's run (weights, optimiser, sampler, random states, step,
    time, history, best) with what saves, restores, steps and validates it."""

    def __init__(
        self,
        model: SAM4EM,
        s: StageSettings,
        train: TileSet,
        val: TileSet | None,
        work_dir: Path,
        init_identity: str,
        path: StepPath,
    ) -> None:
        self.model, self.s, self.train, self.val = model, s, train, val
        self.device = pick_device()
        self.bf16 = s.bf16 if s.bf16 is not None else bf16_native(self.device)
        work_dir.mkdir(parents=True, exist_ok=True)
        model.to(self.device).train()
        if path.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model, s, fused=path.fused)
        self.feeder = BatchFeeder(data=train, s=s, ahead=path.ahead)
        torch.manual_seed(s.seed)
        self.run_id = fingerprint(model, s, train, val, init_identity)
        self.step, self.elapsed = 0, 0.0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"step": -1, "score": -1.0}
        self.last_path, self.best_path = work_dir / "last.pt", work_dir / "best.pt"

    def restore(self) -> None:
        """Continue from ``last.pt`` when it was written by a run with the same identity."""
        if not self.last_path.is_file():
            return
        state = torch.load(self.last_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.run_id:
            log.info("stage %d: %s is from other settings; starting afresh",
                     self.s.stage, self.last_path)  # fmt: skip
            return
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.feeder.restore(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.history, self.best = state["history"], state["best"]
        log.info("stage %d: resuming from %s at step %d", self.s.stage, self.last_path, self.step)

    def save(self) -> None:
        """Write ``last.pt``: everything :meth:`restore` needs."""
        _save_state(self.last_path, {
            "fingerprint": self.run_id, "step": self.step, "elapsed": self.elapsed,
            "history": self.history, "best": self.best, "model": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(), "batches": self.feeder.state(),
            "torch_rng": torch.get_rng_state(),
        })  # fmt: skip

    def train_step(self, budget_s: float | None) -> tuple[float, float, float]:
        """One optimisation step at the scheduled rate; (loss, stage-1 loss, stage-2 loss)."""
        s, device = self.s, self.device
        done = run_progress(self.step, s.steps, s.warmup_steps, self.elapsed, budget_s)
        factor = lr_factor(self.step, s.warmup_steps, done)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        losses = optimise(self.model, self.optimizer, self.feeder.next(), s, device, self.bf16)
        self.step += 1
        return losses

    def log_losses(self, window: list[tuple[float, float, float]]) -> None:
        """Add the mean losses since the last log to the history."""
        mean = np.mean(window, axis=0)
        self.history.append(
            {"step": self.step, "loss": mean[0], "loss_stage1": mean[1], "loss_stage2": mean[2],
             "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": round(self.elapsed, 2)}
        )  # fmt: skip

    def validate(self) -> None:
        """Val Dice into the history; ``best.pt`` when it is the best so far."""
        if self.val is None or len(self.val) == 0:
            return
        scores = evaluate_dice(self.model, self.val, self.s, self.device)
        mean = float(np.mean(list(scores.values())))
        if not self.history or self.history[-1]["step"] != self.step:
            self.history.append({"step": self.step})
        self.history[-1].update(
            {f"val_dice_{c}": v for c, v in scores.items()} | {"val_dice_mean": mean}
        )
        if mean > self.best["score"]:
            self.best = {"step": self.step, "score": mean}
            extra = {"stage": self.s.stage, "step": self.step, "val_dice": scores,
                     "scale": self.train.scale}  # fmt: skip
            save_checkpoint(self.model, self.best_path, extra=extra)

    def finish(self, out: Path) -> TrainResult:
        """Last validation, val thresholds, history, curves; publish the best as ``out``."""
        s = self.s
        if not self.history or self.history[-1]["step"] != self.step:
            self.history.append({"step": self.step, "elapsed_s": round(self.elapsed, 2)})
        if self.best["step"] != self.step:
            self.validate()
        if not self.best_path.is_file():  # no validation data: the last weights are the result
            extra = {"stage": s.stage, "step": self.step, "scale": self.train.scale}
            save_checkpoint(self.model, self.best_path, extra=extra)
            self.best = {"step": self.step, "score": float("nan")}
        self.save()
        if self.val is not None and len(self.val):
            thresholds = _store_thresholds(self.model, self.best_path, self.val, s, self.device)
            log.info("stage %d: per-class thresholds chosen on val: %s", s.stage, thresholds)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_history(self.history, out.with_name(f"{out.stem}_history.csv"))
        write_curves(self.history, out.with_name(f"{out.stem}_curves.png"), f"stage {s.stage}")
        write_bytes_atomic(out, self.best_path.read_bytes())
        log.info("stage %d: %d steps in %.1f s; best step %d, mean val Dice %.4f", s.stage,
                 self.step, self.elapsed, self.best["step"], self.best["score"])  # fmt: skip
        return TrainResult(
            self.step, self.best["step"], self.best["score"], self.elapsed, self.history
        )


def train_stage(
    model: SAM4EM,
    s: StageSettings,
    train: TileSet,
    val: TileSet | None,
    out: Path,
    work_dir: Path,
    init_identity: str = "",
    path: StepPath | None = None,
) -> TrainResult:
    """Train ``model`` for one stage; writes ``out`` (best), history CSV and curves PNG.

    The budget is ``s.steps`` and, when set, ``s.minutes`` of wall-clock time (validation
    included): the run ends at whichever comes first, and the schedule follows it.
    ``path``: how steps run (default: :class:`StepPath`'s fast path)."""
    run = _StageRun(model, s, train, val, work_dir, init_identity, path or StepPath())
    with run.feeder:
        return _train(run, s, out)


def _train(run: _StageRun, s: StageSettings, out: Path) -> TrainResult:
    run.restore()
    budget_s = s.minutes * 60 if s.minutes else None
    window: list[tuple[float, float, float]] = []
    bar = StepProgress(f"stage {s.stage}", s.steps, run.step, budget_s, run.elapsed)
    t_start = time.perf_counter() - run.elapsed
    while run.step < s.steps and (budget_s is None or run.elapsed < budget_s):
        window.append(run.train_step(budget_s))
        run.elapsed = time.perf_counter() - t_start
        bar.advance(run.step, run.elapsed, loss=f"{window[-1][0]:.3f}",
                    lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")  # fmt: skip
        if run.step % s.log_every == 0 or run.step == s.steps:
            run.log_losses(window)
            window = []
        if run.step % s.val_every == 0:
            run.validate()
        if run.step % s.save_every == 0:
            run.save()
    bar.close()
    return run.finish(out)
