"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

The cosine runs over the run's progress: the fraction of its steps done or, when the
stage has a minutes budget, of the budget's time elapsed (validation included),
whichever is further along. A minutes budget therefore ends its decay when its time
ends, whatever speed the machine has, with no step count estimated beforehand.
"""

from __future__ import annotations

import math


def run_progress(
    step: int, steps: int, warmup: int, elapsed_s: float = 0.0, budget_s: float | None = None
) -> float:
    """Fraction in [0, 1] of the decay done after ``step`` steps and ``elapsed_s`` seconds."""
    by_steps = (step - warmup) / max(1, steps - warmup)
    by_time = elapsed_s / budget_s if budget_s else 0.0
    return min(1.0, max(0.0, by_steps, by_time))


def lr_factor(step: int, warmup: int, progress: float, floor: float = 0.05) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) and ``progress``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
