"""GELU and BatchNorm that run on a channels-last map's own memory order.

The fast training step keeps its convolutions' maps channels-last (NHWC in memory, see
:class:`~sam4em.train.trainer.StepPath`). On the CPU, PyTorch's bf16 GELU and BatchNorm
kernels take a slow strided path for such maps, and BatchNorm's backward there is also
less accurate (on a 32-channel 3x3 block at 128 x 128 its weight gradient was 2x further
from a float64 reference than the same block's in NCHW, 10x for the first 1-channel
convolution). Viewed as (N, H, W, C) the same memory is contiguous, so these modules
compute the same operation on that view, where the kernels are the vectorised ones.
Maps in any other layout go through the usual kernels. The parameters, buffers and
state-dict keys are those of ``nn.GELU`` and ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4D map stored NHWC and not also plain contiguous."""
    return (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    )


class GELU(nn.GELU):
    """``nn.GELU`` (exact, erf form) on the NHWC view of a channels-last map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """GELU of ``x``, in ``x``'s layout."""
        if not is_channels_last(x):
            return super().forward(x)
        return F.gelu(x.permute(0, 2, 3, 1), approximate=self.approximate).permute(0, 3, 1, 2)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on the (N * H * W, C) rows of a channels-last map: per channel,
    the statistics over batch and pixels, the running averages updated as the parent's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``x``, in ``x``'s layout."""
        if not is_channels_last(x) or self.momentum is None or not self.track_running_stats:
            return super().forward(x)
        n, c, h, w = x.shape
        if self.training:  # tracked: the fallback above takes the untracked case
            self.num_batches_tracked.add_(1)
        rows = F.batch_norm(
            x.permute(0, 2, 3, 1).reshape(n * h * w, c),
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )
        return rows.view(n, h, w, c).permute(0, 3, 1, 2)
