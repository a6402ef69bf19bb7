"""Where a dataset's slices lie in z, and the gaps between slices that are not neighbours.

A volume's slices are its array's z planes, in order. Their *z index* is the section
number each one had in the original stack: consecutive numbers are neighbours, and a
step larger than one is a gap (sections skipped, or labelled slices picked from far
apart). The import stores the z index in ``volume.zarr``'s attributes; the stages that
use neighbours read it from there: the tiling (z-sequences never span a gap), training
(no sequences at all: stage 2 is skipped), inference (the memory is cleared across a
gap, and warm-up slices come from the core's own run) and the slice-to-slice
consistency of the evaluation (pairs across a gap are not compared).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_DIGITS = re.compile(r"\d+")


def numbers_from_names(names: Sequence[str]) -> list[int] | None:
    """The last run of digits in each file name (its suffix dropped), when every name
    has one and they strictly increase in the given order; otherwise None."""
    numbers = []
    for name in names:
        found = _DIGITS.findall(name.rsplit(".", 1)[0])
        if not found:
            return None
        numbers.append(int(found[-1]))
    if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        return None
    return numbers


def check_z_index(z_index: Sequence[int], n_slices: int, key: str) -> list[int]:
    """``z_index`` as a list, checked: one strictly increasing integer per slice."""
    values = [int(v) for v in z_index]
    if len(values) != n_slices:
        raise ValueError(f"{key}: {len(values)} numbers for a volume of {n_slices} slices")
    for k, (a, b) in enumerate(zip(values, values[1:], strict=False)):
        if b <= a:
            raise ValueError(f"{key}: must increase; slice {k + 1} has {b} after {a}")
    return values


def gaps(z_index: Sequence[int]) -> list[int]:
    """The slices that follow a gap: ``k`` such that slices ``k - 1`` and ``k`` are not
    neighbours."""
    return [k for k in range(1, len(z_index)) if z_index[k] != z_index[k - 1] + 1]


def volume_z_index(meta: Mapping[str, Any], n_slices: int) -> list[int]:
    """The z index in a volume's ``sam4em`` attributes (consecutive when it has none:
    volumes imported before it was recorded)."""
    return [int(v) for v in meta.get("z_index") or range(n_slices)]


def run_of(z_index: Sequence[int], k: int) -> range:
    """The run of neighbouring slices (no gap inside) that holds slice ``k``."""
    start = k
    while start > 0 and z_index[start] == z_index[start - 1] + 1:
        start -= 1
    stop = k + 1
    while stop < len(z_index) and z_index[stop] == z_index[stop - 1] + 1:
        stop += 1
    return range(start, stop)


def breaks_in(z_index: Sequence[int], first: int, stop: int) -> frozenset[int]:
    """Gaps inside slices ``first .. stop - 1``, as positions relative to ``first``:
    ``k`` when slice ``first + k`` follows a gap."""
    return frozenset(k - first for k in gaps(z_index) if first < k < stop)


def describe_gaps(z_index: Sequence[int], limit: int = 5) -> str:
    """A short account of the gaps for messages: how many, and after which slices."""
    found = gaps(z_index)
    if not found:
        return "no gaps in z"
    shown = ", ".join(f"{z_index[k - 1]}->{z_index[k]}" for k in found[:limit])
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    parts = runs(z_index)
    isolated = sum(len(r) == 1 for r in parts)
    return (
        f"{len(found)} gap{'s' if len(found) > 1 else ''} in z ({shown}{more}); "
        f"{len(parts)} runs of neighbouring slices, {isolated} of them single slices"
    )


def runs(z_index: Sequence[int]) -> list[range]:
    """The runs of neighbouring slices, in order."""
    starts = [0, *gaps(z_index)]
    return [range(a, b) for a, b in zip(starts, [*starts[1:], len(z_index)], strict=True)]
