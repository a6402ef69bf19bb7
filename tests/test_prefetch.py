"""The background slice reader of the block jobs (:mod:`sam4em.io.prefetch`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam4em.io.prefetch import PrefetchedStack
from sam4em.io.zarr_store import create_array, open_group


def _array(tmp_path: Path) -> tuple[object, np.ndarray]:
    data = np.random.default_rng(3).integers(0, 255, (23, 40, 50), dtype=np.uint8)
    group = open_group(tmp_path / "v.zarr", mode="w")
    array = create_array(group, "raw", data.shape, (4, 16, 16), data.dtype)
    array[...] = data
    return array, data


def test_slices_match_the_box_in_any_order(tmp_path: Path) -> None:
    array, data = _array(tmp_path)
    with PrefetchedStack(array=array, z=(3, 21), y=(5, 37), x=(0, 50)) as stack:
        assert len(stack) == 18
        for k in (17, 0, 9, 9):  # the last first: waits for the reader to get there
            np.testing.assert_array_equal(stack[k], data[3 + k, 5:37, :])
        with pytest.raises(IndexError):
            stack[18]


def test_a_read_error_reaches_the_reader_of_that_slice(tmp_path: Path) -> None:
    array, data = _array(tmp_path)
    # corrupt the chunk holding z 8..11, y 0..15, x 0..15
    chunk = next(
        p for p in (tmp_path / "v.zarr" / "raw").rglob("*") if p.parts[-3:] == ("2", "0", "0")
    )
    chunk.write_bytes(b"not a blosc frame")
    with PrefetchedStack(array=array, z=(0, 23), y=(0, 40), x=(0, 50)) as stack:
        np.testing.assert_array_equal(stack[7], data[7])  # slabs before the bad one arrive
        with pytest.raises(RuntimeError, match="reading slices") as caught:
            stack[8]
        assert caught.value.__cause__ is not None
