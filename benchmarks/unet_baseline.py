"""The yardstick: a plain 2D U-Net trained from scratch on the same tiles, loss and budget.

Used by ``accuracy.py``; not part of the package (sam4em does not ship a U-Net model).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from sam4em.train.losses import bce_dice
from sam4em.train.sampler import BalancedSampler
from sam4em.train.schedule import lr_factor
from sam4em.train.settings import StageSettings
from sam4em.train.tile_data import TileSet
from sam4em.train.trainer import evaluate_dice, make_batch


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Four-level U-Net (widths w, 2w, 4w, 8w) with max-pool down and transposed-conv up."""

    def __init__(self, classes: int, width: int = 24) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(3)
        )
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i]) for i in range(3))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, H, W) for grey images (B, 1, H, W) in 0..255; H, W multiples of 8."""
        x = x / 127.5 - 1
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(3)):
            x = self.merge[i](torch.cat([self.up[i](x), skips[i]], dim=1))
        return self.head(x)


def _val_dice(model: UNet, val: TileSet, s: StageSettings) -> float:
    """Mean per-class Dice on the val tiles (the trainer's measure, 2D model)."""
    scores = evaluate_dice(model, val, s, torch.device("cpu"), lambda x: [model(x[:, 0])])
    return float(np.mean(list(scores.values())))


def train_unet(train: TileSet, val: TileSet, s: StageSettings, minutes: float) -> tuple[UNet, dict]:
    """Train for ``s.steps`` or ``minutes``, whichever ends first; returns the best-val model."""
    torch.manual_seed(s.seed)
    model = UNet(len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sampler = BalancedSampler(train.presence, train.classes, s.balance, s.seed)
    rng = np.random.default_rng(s.seed + 1000)
    best, best_state, step, t0 = -1.0, None, 0, time.perf_counter()
    while step < s.steps and time.perf_counter() - t0 < minutes * 60:
        for g in optimizer.param_groups:
            g["lr"] = s.lr * lr_factor(step, s.steps, s.warmup_steps)
        images, labels, labelled = make_batch(train, sampler.draw(s.batch_size), s, rng)
        loss = bce_dice(model(images[:, 0]), labels[:, 0], labelled)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        step += 1
        if step % s.val_every == 0 or step == s.steps:
            score = _val_dice(model, val, s)
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is None or _val_dice(model, val, s) > best:
        best_state = model.state_dict()
    model.load_state_dict(best_state)
    return model.eval(), {"steps": step, "seconds": time.perf_counter() - t0, "val_dice": best}


@torch.no_grad()
def predict_unet(model: UNet, stack: np.ndarray) -> np.ndarray:
    """(C, Z, Y, X) probabilities of whole slices (padded to a multiple of 8)."""
    z, h, w = stack.shape
    ph, pw = -h % 8, -w % 8
    out = []
    for k in range(z):
        image = np.pad(stack[k], ((0, ph), (0, pw)), mode="reflect")
        x = torch.from_numpy(image).float()[None, None]
        out.append(torch.sigmoid(model(x))[0, :, :h, :w].numpy())
    return np.stack(out, axis=1)
