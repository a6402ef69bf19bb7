"""One inference job: predict a block's core with warm-up, write its chunks, mark it done.

The job reads the block's read box over its warm-up and core slices (and, for a
both-ways run, as many slices after the core) on a background thread
(:class:`~sam4em.io.prefetch.PrefetchedStack`) while the model runs slice by slice with
the memory, and keeps the core: it goes into ``pred.zarr`` a z chunk at a time, with its
footprint in the viewer levels the block covers in whole chunks. Slices are written as
soon as their chunk is final; ``{block}.done`` is written last, so a killed job leaves
no marker and its rerun redoes the whole block (rewriting identical chunks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.blocks.plan import Block, Box, PlanSettings, read_plan
from sam4em.data.z_index import breaks_in, run_of, volume_z_index
from sam4em.errors import InputDataError
from sam4em.io.atomic import write_json_atomic
from sam4em.io.prefetch import PrefetchedStack
from sam4em.io.pyramid import block_pyramid, write_block_levels
from sam4em.io.zarr_store import LEVEL0, VOLUME
from sam4em.model.checkpoint import load_checkpoint, uses_memory
from sam4em.model.device import pick_device
from sam4em.model.lora import merge_lora
from sam4em.model.sam_weights import CheckpointError
from sam4em.predict.pred_store import (
    UNCERTAINTY,
    ensure_pred_store,
    mark_incomplete,
    store_identity,
    uncertainty_of,
)
from sam4em.predict.settings import InferenceSettings, PredictSettings
from sam4em.predict.stack_predictor import PlaneWindow, StackPredictor
from sam4em.progress import progress
from sam4em.tiling.resample import scaled_plane

log = logging.getLogger(__name__)


def block_window(block: Block, shape: tuple[int, ...], plan: PlanSettings) -> PlaneWindow:
    """The block's place in the volume plane, with the lattice tiles it runs (see
    :meth:`sam4em.tiling.lattice.Lattice.window`)."""
    lattice, scale, tile = plan.lattice, plan.scale, plan.lattice.tile
    ny, nx = scaled_plane(shape, scale)
    ys, _ = lattice.window(shape[1], scale, block.core.start[1], block.core.stop[1])
    xs, _ = lattice.window(shape[2], scale, block.core.start[2], block.core.stop[2])
    my0, mx0 = min(ys), min(xs)
    return PlaneWindow(
        plane=(shape[1], shape[2]),
        scale=scale,
        read_origin=(block.read.start[1], block.read.start[2]),
        model_box=(my0, min(ny, max(ys) + tile), mx0, min(nx, max(xs) + tile)),
        origins=tuple((y - my0, x - mx0) for y in ys for x in xs),
        core_box=(block.core.start[1], block.core.stop[1], block.core.start[2], block.core.stop[2]),
    )


def _file_identity(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train the model first)")
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _job_identity(
    model: str, volume: str, block: Block, settings: PredictSettings, plan: PlanSettings
) -> str:
    data = {"model": model, "volume": volume, "block": block.id, "writes": "levels",
            "plan": plan.to_dict(), **settings.__dict__}  # fmt: skip
    return _digest(data)


def _fail_once_for_tests(block_id: str) -> None:
    """Test-only fault injection: with ``SAM4EM_TEST_FAIL_ONCE=<dir>``, the first attempt
    of each block fails after leaving a note in <dir> (the retry then succeeds)."""
    folder = os.environ.get("SAM4EM_TEST_FAIL_ONCE")
    if not folder:
        return
    note = Path(folder) / f"{block_id}.failed"
    if not note.exists():
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text("injected failure\n")
        raise RuntimeError(f"block {block_id}: injected test failure (SAM4EM_TEST_FAIL_ONCE)")


class _CoreWriter:
    """Writes a block's core, handed over slice by slice in z order, a z chunk at a time:
    each class's uint8 probabilities and their uncertainty
    (:func:`~sam4em.predict.pred_store.uncertainty_of`) into level 0 and the footprint in
    the viewer levels
    ``levels`` (:func:`~sam4em.io.pyramid.block_pyramid`), from the slab in memory. The
    writing (compression, mostly) runs on a thread while the model goes on; one slab
    at a time waits there. Use as a context manager: leaving it waits for the last."""

    def __init__(
        self, *, store: Any, classes: list[str], core: Box, levels: tuple[list[str], list[int]]
    ) -> None:
        self.groups = [store[c] for c in classes]
        self.uncertainty = [store[f"{UNCERTAINTY}/{c}"] for c in classes]
        self.core, self.levels = core, levels
        self.step = int(self.groups[0][LEVEL0].chunks[0])
        self.pending: list[np.ndarray] = []  # (C, y, x) slices from self.z
        self.z = core.start[0]
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slab-writer")
        self.writing: Future[None] | None = None

    def add(self, z: int, probs: np.ndarray) -> None:
        """The probabilities (C, y, x) of core slice ``z`` (the next one)."""
        if z != self.z + len(self.pending):
            raise ValueError(f"slice {z} out of order (expected {self.z + len(self.pending)})")
        self.pending.append(np.rint(np.clip(probs, 0, 1) * 255).astype(np.uint8))
        if (z + 1) % self.step == 0 or z + 1 == self.core.stop[0]:
            slab = np.stack(self.pending, axis=1)  # (C, z, y, x)
            start = (self.z, *self.core.start[1:])
            stop = (self.z + slab.shape[1], *self.core.stop[1:])
            self._wait()
            self.writing = self.pool.submit(self._write, slab, start, stop)
            self.z, self.pending = stop[0], []

    def _write(self, slab: np.ndarray, start: tuple[int, ...], stop: tuple[int, ...]) -> None:
        for group, other, values in zip(self.groups, self.uncertainty, slab, strict=True):
            for target, image in ((group, values), (other, uncertainty_of(values))):
                target[LEVEL0][tuple(map(slice, start, stop))] = image
                write_block_levels(target, *self.levels, start, stop, "mean", image)

    def _wait(self) -> None:
        if self.writing is not None:
            self.writing.result()  # raises what the write raised
            self.writing = None

    def __enter__(self) -> _CoreWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self._wait()
        finally:
            self.pool.shutdown(wait=True)


def predict_block(
    job: InferenceSettings,
    checkpoint: str | os.PathLike[str],
    volume: str | os.PathLike[str],
    plan: str | os.PathLike[str],
    block_id: str,
    out: str | os.PathLike[str],
    done: str | os.PathLike[str],
) -> dict[str, Any]:
    """Predict block ``block_id`` of ``plan`` into ``out``; writes the ``done`` marker.
    The model grid is the plan's (``tiling.scale`` when it was made)."""
    checkpoint, done = Path(checkpoint), Path(done)
    planned = read_plan(plan)
    blocks = {b.id: b for b in planned.blocks}
    if block_id not in blocks:
        ids = list(blocks)
        listed = ", ".join(ids[:8]) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")
        raise InputDataError(f"{plan}: no block '{block_id}'; planned blocks: {listed}")
    block, geometry = blocks[block_id], planned.settings
    scale = geometry.scale
    settings = replace(job.predict, scale=scale)
    root = VOLUME.open(volume)
    raw, meta = root["raw"], dict(root.attrs["sam4em"])
    model_id = _digest(_file_identity(checkpoint))
    volume_id = str(meta.get("import_id", ""))
    job_id = _job_identity(model_id, volume_id, block, settings, geometry)
    if done.is_file() and json.loads(done.read_text()).get("job") == job_id:
        log.info("block %s is done already (%s); skipped", block_id, done)
        return json.loads(done.read_text())
    done.unlink(missing_ok=True)  # made from another model, volume or plan: redo it
    _fail_once_for_tests(block_id)
    t0 = time.perf_counter()
    if tuple(raw.shape) != planned.volume_shape:
        raise InputDataError(f"{plan}: planned for shape {list(planned.volume_shape)}, "
                             f"{volume} has {list(raw.shape)}")  # fmt: skip
    model, payload = load_checkpoint(
        checkpoint, base_checkpoint=job.model.checkpoint, expect=job.model
    )
    if model.config.img_size != geometry.lattice.tile:
        raise InputDataError(f"{checkpoint}: model tiles are {model.config.img_size} px, "
                             f"the plan was made for {geometry.lattice.tile} px")  # fmt: skip
    trained_scale = float(payload["extra"].get("scale", 1.0))
    if trained_scale != scale:
        raise InputDataError(f"{checkpoint}: the model was trained at tiling.scale "
                             f"{trained_scale}, the plan is for scale {scale}")  # fmt: skip
    settings = replace(settings, memory=settings.memory and uses_memory(payload["extra"]))
    merge_lora(model.image_encoder.vit)
    predictor = StackPredictor(model, settings, pick_device(job.device))
    classes = list(model.config.classes)
    store = ensure_pred_store(out, store_identity(raw.shape, geometry.chunks, classes),
                              meta["voxel_size_nm"], geometry.block_shape)  # fmt: skip
    cz0, cz1 = block.core.start[0], block.core.stop[0]
    (_, ry0, rx0), (_, ry1, rx1) = block.read.start, block.read.stop
    # warm-up (and, both ways, the slices after the core) only from the core's own runs:
    # the memory is cleared across a gap in z, so slices beyond one would be wasted
    z_index = volume_z_index(meta, raw.shape[0])
    z0 = max(block.warmup[0], run_of(z_index, cz0).start)
    z1 = cz1
    if settings.both_ways:
        z1 = min(run_of(z_index, cz1 - 1).stop, cz1 + (cz0 - block.warmup[0]))
    breaks = breaks_in(z_index, z0, z1)
    window = block_window(block, raw.shape, geometry)
    mark_incomplete(store)
    thresholds = payload["extra"].get("thresholds")
    if thresholds and store.attrs.get("thresholds") != thresholds:
        store.attrs["thresholds"] = thresholds  # the same for every block of one model

    levels = block_pyramid(raw.shape, geometry.chunks, geometry.block_shape)  # type: ignore[arg-type]
    writer = _CoreWriter(store=store, classes=classes, core=block.core, levels=levels)
    total = (z1 - z0) * (2 if settings.both_ways else 1)
    reader = PrefetchedStack(array=raw, z=(z0, z1), y=(ry0, ry1), x=(rx0, rx1))
    bar = progress(total=total, desc=f"block {block_id}", unit="slice")
    with reader as stack, writer, bar:
        if settings.both_ways:
            probs = predictor.predict(stack, window, lambda: bar.update(1), breaks)
            for z in range(cz0, cz1):
                writer.add(z, probs[:, z - z0])
        else:
            for k, p in predictor.run_window(stack, range(len(stack)), window, breaks):
                if z0 + k >= cz0:
                    writer.add(z0 + k, p)
                bar.update(1)
    seconds = time.perf_counter() - t0
    record = {
        "job": job_id,
        "block": block_id,
        "core": {"start": list(block.core.start), "stop": list(block.core.stop)},
        "slices_run": total,
        "tiles_per_slice": len(window.origins),
        "device": str(predictor.device),
        "model_stage": payload["extra"].get("stage"),
        "memory": settings.memory,
        "z_breaks": sorted(z0 + k for k in breaks),
        "model_choice": payload["extra"].get("choice"),
        "seconds": round(seconds, 3),
        "checkpoint": str(checkpoint),
        "model": model_id,
        "volume": volume_id,
    }
    write_json_atomic(done, record)
    log.info("block %s: %d slices in %.1f s", block_id, total, seconds)
    return record
