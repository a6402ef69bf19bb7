"""The block plan partitions the volume exactly, on the chunk grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sam4em.blocks.plan import (
    PlanSettings,
    block_ids,
    default_block_shape,
    load_plan,
    load_settings,
    plan_blocks,
    redundancy,
    tile_forwards,
    write_plan,
)
from sam4em.tiling.lattice import Lattice


def _settings(block, chunks, tile, overlap, warmup) -> PlanSettings:
    return PlanSettings(tuple(block), tuple(chunks), Lattice.from_overlap(tile, overlap), warmup)


@st.composite
def plans(draw):
    shape = tuple(draw(st.integers(1, 40)) for _ in range(3))
    chunks = tuple(draw(st.integers(1, 8)) for _ in range(3))
    block = tuple(c * draw(st.integers(1, 4)) for c in chunks)
    tile = draw(st.integers(1, 16))
    return shape, block, chunks, tile, draw(st.integers(0, tile - 1)), draw(st.integers(0, 6))


@settings(max_examples=300, deadline=None)
@given(plans())
def test_cores_partition_the_volume(args):
    shape, block, chunks, tile, overlap, warmup = args
    blocks = plan_blocks(shape, _settings(block, chunks, tile, overlap, warmup))
    lattice = [Lattice(tile, tile - overlap).starts(n) for n in shape]
    cover = np.zeros(shape, np.int32)
    for b in blocks:
        cover[b.core.slices()] += 1
        # cores start on the chunk grid and stay inside the volume
        assert all(s % c == 0 for s, c in zip(b.core.start, chunks, strict=True))
        assert all(
            0 <= a < e <= n for a, e, n in zip(b.core.start, b.core.stop, shape, strict=True)
        )
        # a core ends on the grid unless it is the last along that axis
        for e, c, n in zip(b.core.stop, chunks, shape, strict=True):
            assert e % c == 0 or e == n
        # read box: the core plus every lattice tile touching it, clipped; core's z range
        assert (b.read.start[0], b.read.stop[0]) == (b.core.start[0], b.core.stop[0])
        for ax in (1, 2):
            assert b.read.start[ax] <= b.core.start[ax] and b.read.stop[ax] >= b.core.stop[ax]
            touching = [
                t for t in lattice[ax] if t < b.core.stop[ax] and t + tile > b.core.start[ax]
            ]
            assert touching and b.read.start[ax] == min(touching)
            assert b.read.stop[ax] == min(shape[ax], max(touching) + tile)
        # warm-up slices lie just before the core
        assert b.warmup == (max(0, b.core.start[0] - warmup), b.core.start[0])
    assert cover.min() == 1 and cover.max() == 1
    assert len({b.id for b in blocks}) == len(blocks)


def test_demo_plan_numbers():
    blocks = plan_blocks((20, 1024, 1024), _settings((10, 512, 512), (1, 256, 256), 256, 64, 2))
    assert len(blocks) == 8
    # tiles every 192 px: the first block's core [0, 512) reads the tiles at 0, 192, 384
    assert blocks[0].read.stop[1:] == (640, 640) and blocks[-1].read.start[1:] == (384, 384)
    second_z = [b for b in blocks if b.index[0] == 1]
    assert all(b.warmup == (8, 10) for b in second_z)


def test_misaligned_block_shape_is_refused():
    with pytest.raises(ValueError, match="not a multiple"):
        _settings((4, 50, 64), (1, 32, 32), 32, 0, 0)


def test_plan_file_round_trip(tmp_path):
    settings = _settings((4, 32, 32), (2, 16, 16), 24, 8, 1)
    blocks = write_plan(tmp_path / "blocks.json", (9, 50, 70), settings)
    assert load_plan(tmp_path / "blocks.json") == blocks
    assert load_settings(tmp_path / "blocks.json") == settings
    data = json.loads((tmp_path / "blocks.json").read_text())
    assert data["volume_shape"] == [9, 50, 70]
    assert data["settings"] == {"block_shape": [4, 32, 32], "chunks": [2, 16, 16],
                                "tile_size": 24, "tile_overlap": 8, "warmup": 1,
                                "scale": 1.0}  # fmt: skip
    assert block_ids(tmp_path / "blocks.json") == [b.id for b in blocks]
    assert not list(tmp_path.glob("*.partial-*"))


def test_default_block_shape_follows_the_volume(tmp_path):
    auto = PlanSettings(None, (1, 256, 256), Lattice.from_overlap(256, 64), 4, scale=0.5)
    # a lab-sized volume: 4096 x 4096 planes at most, 40 slices (10 x warm-up) deep
    assert auto.resolved((5000, 20000, 20000)).block_shape == (40, 4096, 4096)
    # a small one: one block, whole (rounded up to whole chunks)
    assert auto.resolved((20, 1000, 1030)).block_shape == (20, 1024, 1280)
    assert len(plan_blocks((20, 1000, 1030), auto)) == 1
    write_plan(tmp_path / "blocks.json", (64, 2048, 2048), auto)
    assert load_settings(tmp_path / "blocks.json").block_shape == (40, 2048, 2048)
    assert default_block_shape((3, 100, 700), (2, 64, 64), (64, 512, 512)) == (4, 128, 512)


def test_redundancy_counts_tiles_and_warm_up_done_twice():
    lattice = Lattice.from_overlap(256, 64)  # tiles every 192 px
    whole = PlanSettings((64, 2048, 2048), (1, 256, 256), lattice, 4)
    assert redundancy((64, 2048, 2048), whole) == 1.0
    # z only: the second block runs 4 warm-up slices before its 32
    halves = PlanSettings((32, 2048, 2048), (1, 256, 256), lattice, 4)
    assert redundancy((64, 2048, 2048), halves) == pytest.approx(68 / 64)
    assert tile_forwards((64, 2048, 2048), whole) == 64 * 11 * 11
    # small xy blocks read the lattice tiles at their edges twice
    small = PlanSettings((10, 512, 512), (1, 256, 256), lattice, 4)
    assert redundancy((64, 2048, 2048), small) > 1.5
    auto = PlanSettings(None, (1, 256, 256), Lattice.from_overlap(256, 64), 4, scale=0.5)
    assert redundancy((64, 2048, 2048), auto) <= 1.15
