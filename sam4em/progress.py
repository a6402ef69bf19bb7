"""Progress bars that stay readable in log files (Snakemake and SLURM redirect stderr)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Hide every progress bar from now on (the command's ``-q``)."""
    global _quiet
    _quiet = quiet


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """A tqdm bar; on a terminal it updates live, in a log file at most every 30 s;
    none at all after ``set_quiet(True)``."""
    kwargs.setdefault("disable", _quiet)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
    return tqdm(*args, **kwargs)


class StepProgress:
    """Progress of a run that ends at a step cap or, when ``budget_s`` is set, at the
    end of its time budget, whichever comes first: with a budget the bar runs over its
    seconds (the cap is a limit the run may never reach), with the steps done and the
    steps per second beside it; without one it counts steps up to the cap."""

    def __init__(
        self, desc: str, steps: int, step: int, budget_s: float | None, elapsed_s: float
    ) -> None:
        self.budget_s, self.step0, self.elapsed0 = budget_s, step, elapsed_s
        if budget_s is None:
            self.bar = progress(total=steps, initial=step, desc=desc, unit="step")
        else:
            shown = min(elapsed_s, budget_s)
            fmt = "{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
            self.bar = progress(total=round(budget_s), initial=round(shown), desc=desc,
                                unit="s", bar_format=fmt)  # fmt: skip

    def advance(self, step: int, elapsed_s: float, **postfix: str) -> None:
        """Record that the run is at ``step`` after ``elapsed_s`` seconds in all."""
        if self.budget_s is None:
            self.bar.set_postfix(refresh=False, **postfix)
            self.bar.update(step - self.bar.n)
            return
        rate = (step - self.step0) / max(1e-9, elapsed_s - self.elapsed0)
        self.bar.set_postfix(refresh=False, step=str(step), **{"steps/s": f"{rate:.2f}"}, **postfix)
        self.bar.update(round(min(elapsed_s, self.budget_s)) - self.bar.n)

    def close(self) -> None:
        """End the bar."""
        self.bar.close()
