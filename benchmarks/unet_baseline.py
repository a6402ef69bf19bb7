"""The yardsticks: plain 2D and 2.5D U-Nets trained from scratch like the SAM4EM model.

Same tiles (at their ``tiling.scale``), balanced sampler, augmentation, BCE + Dice loss,
warm-up + cosine schedule over the elapsed share of a minutes budget (validation time
included), best checkpoint by val Dice, per-class thresholds chosen on val, and the same
resampling between volume and model grid at test time. The 2.5D U-Net sees the slice and
the ``context`` slices before it as input channels: the information the 3D memory has.
Used by ``accuracy.py``; not part of the package (sam4em does not ship a U-Net model).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sam4em.model.channels_last import BatchNorm2d
from sam4em.model.device import autocast, bf16_native
from sam4em.predict.stack_predictor import dihedral, undo_dihedral
from sam4em.tiling.resample import resample, scaled_plane
from sam4em.train.feeder import BatchFeeder
from sam4em.train.losses import bce_dice
from sam4em.train.schedule import lr_factor, run_progress
from sam4em.train.settings import StageSettings
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import (
    THRESHOLD_LEVELS,
    choose_thresholds,
    clip_gradients,
    val_dice_table,
)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Four-level U-Net (widths w, 2w, 4w, 8w) with max-pool down and transposed-conv up."""

    def __init__(self, *, classes: int, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(3)
        )
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(3))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for grey images (B, in_channels, H, W) in 0..255; H, W
        multiples of 8."""
        x = x / 127.5 - 1
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(3)):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


@dataclass(frozen=True)
class UNetSettings:
    """One point of the U-Net sweep."""

    width: int = 32
    lr: float = 1e-3
    context: int = 0  # slices before the target as extra input channels (2.5D)


def _inputs(images: torch.Tensor, context: int) -> torch.Tensor:
    """(B, T, 1, S, S) -> (B, context + 1, S, S): the last ``context + 1`` slices."""
    return images[:, images.shape[1] - context - 1 :, 0]


def _windows(images, labels, context: int, rng: np.random.Generator):
    """A random run of ``context + 1`` slices of each training sequence."""
    t = images.shape[1]
    if context == 0:
        return images[:, :1], labels[:, :1]
    start = int(rng.integers(0, t - context))
    return images[:, start : start + context + 1], labels[:, start : start + context + 1]


def train_unet(
    train: TileSet, val: TileSet, s: StageSettings, u: UNetSettings
) -> tuple[UNet, dict[str, Any]]:
    """Train within ``s.minutes`` (or ``s.steps``); returns the best-val model and info
    (steps, seconds, val Dice at 0.5, thresholds chosen on val). Steps run as SAM4EM's
    do (:class:`~sam4em.train.trainer.StepPath`): channels-last, a fused AdamW, the next
    batch prepared meanwhile, bf16 autocast where the CPU has it (``train.bf16``)."""
    torch.manual_seed(s.seed)
    model = UNet(classes=len(train.classes), width=u.width, in_channels=u.context + 1)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=u.lr, weight_decay=s.weight_decay, fused=True
    )
    window_rng = np.random.default_rng(s.seed + 2000)
    predict = lambda x: [model(_inputs(x, u.context))]  # noqa: E731
    device = torch.device("cpu")
    bf16 = s.bf16 if s.bf16 is not None else bf16_native(device)

    def val_score() -> float:
        table = val_dice_table(model, val, s, device, predict)
        return float(np.mean([v[0] for v in table.values()]))

    budget = s.minutes * 60 if s.minutes else None
    best, best_state, step, t0 = -1.0, None, 0, time.perf_counter()
    elapsed = 0.0
    with BatchFeeder(data=train, s=s) as feeder:
        while step < s.steps and (budget is None or elapsed < budget):
            done = run_progress(step, s.steps, s.warmup_steps, elapsed, budget)
            for g in optimizer.param_groups:
                g["lr"] = u.lr * lr_factor(step, s.warmup_steps, done)
            images, labels, labelled = feeder.next()
            images, labels = _windows(images, labels, u.context, window_rng)
            with autocast(device, bf16):
                logits = model(_inputs(images, u.context))
            loss = bce_dice(logits, labels[:, -1], labelled)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(list(model.parameters()), s.grad_clip, True)
            optimizer.step()
            step += 1
            if step % s.val_every == 0:
                score = val_score()
                if score > best:
                    best, best_state = score, copy.deepcopy(model.state_dict())
            elapsed = time.perf_counter() - t0
    if best_state is None or val_score() > best:
        best, best_state = val_score(), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    table = val_dice_table(model, val, s, device, predict, THRESHOLD_LEVELS)
    info = {
        "steps": step,
        "seconds": time.perf_counter() - t0,
        "val_dice": best,
        "val_dice_at_thresholds": float(np.mean([v.max() for v in table.values()])),
        "thresholds": choose_thresholds(table, THRESHOLD_LEVELS),
    }
    return model.eval(), info


@torch.no_grad()
def predict_unet(
    model: UNet, stack: np.ndarray, scale: float, context: int, tta: bool = False
) -> np.ndarray:
    """(C, Z - context, Y, X) probabilities of slices ``context..Z-1`` of a (Z, Y, X) stack:
    resampled onto the model grid, predicted whole (padded to a multiple of 8), resampled
    back; with ``tta`` averaged over the 8 flips/rotations, as SAM4EM's inference does."""
    z, h, w = stack.shape
    mh, mw = scaled_plane(stack.shape, scale)
    scaled = np.stack([resample(im, (h, w), (mh, mw), grey=True) for im in stack])
    scaled = np.pad(scaled, ((0, 0), (0, -mh % 8), (0, -mw % 8)), mode="reflect")
    out = []
    for k in range(context, z):
        x = torch.from_numpy(scaled[k - context : k + 1]).float()[None]
        views = range(8) if tta else range(1)
        probs = torch.stack([undo_dihedral(torch.sigmoid(model(dihedral(x, v))), v) for v in views])
        probs = probs.mean(0)[0, :, :mh, :mw].numpy()
        out.append(resample(probs, (mh, mw), (h, w)))
    return np.stack(out, axis=1)
