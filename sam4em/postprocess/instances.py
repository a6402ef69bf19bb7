"""The ``components`` step: instances of one class from ``pred.zarr``, and their table.

The class's mask (probabilities at or above its threshold) is cleaned up
(:mod:`sam4em.postprocess.cleanup`) before labelling, and objects below its smallest
size (``min_voxels`` / ``min_volume_nm3``) or z extent are dropped. Writes
``instances.zarr/{class}`` (uint32, or uint64 beyond 2^32 - 1 voxels; viewer levels by
2x2 mode, :mod:`sam4em.io.pyramid`) and ``objects/{class}.csv`` (id, voxels, volume in
nm^3, bounding box, centroid in voxels and nm, and the confidence, uncertainty, surface,
z extent, shape and border columns of :mod:`sam4em.postprocess.object_measures`).

It runs as jobs (the phases of :mod:`sam4em.postprocess.block_components`), each a
function of :class:`ComponentJobs` with files in a work folder:

- ``label`` (per block): ``{block}.npz``, the block's labels and :class:`BlockSummary`;
- ``contacts`` (per block): ``{block}.pairs.npy``, its labels that touch its neighbours';
- ``merge`` (once): ``final.npy`` (final id of every provisional id), ``merge.json``,
  ``table.csv``, and the empty class array under a temporary name;
- ``relabel`` (per block): the block's chunks of that array and of the viewer levels
  its footprint covers in whole chunks (:func:`sam4em.io.pyramid.block_levels`), then
  ``{block}.done``;
- ``finish`` (once): the remaining (small) viewer levels and the metadata, the array
  renamed to its final name, ``objects/{class}.csv``.

Blocks are the components block shape's grid (:func:`sam4em.blocks.plan.named_cores`);
their cores are whole chunks of the class array, so parallel jobs never write the same
chunk. :func:`components_for_class` runs every job in one process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pandas as pd

from sam4em.blocks.plan import Box, named_cores, read_plan
from sam4em.errors import InputDataError
from sam4em.io.atomic import (
    create_directory_once,
    partial_name,
    remove_leftovers,
    write_bytes_atomic,
    write_json_atomic,
)
from sam4em.io.pyramid import block_pyramid, create_levels, write_block_levels, write_pyramid
from sam4em.io.zarr_store import (
    LEVEL0,
    PREDICTION,
    chunk_misfit,
    class_array,
    create_array,
    open_group,
)
from sam4em.postprocess.block_components import (
    BlockSummary,
    IdTable,
    block_contacts,
    label_block,
    merge_blocks,
    read_with_measures,
    relabel_block,
)
from sam4em.postprocess.cleanup import cleaned_reader
from sam4em.postprocess.object_measures import object_columns
from sam4em.postprocess.settings import ComponentSettings
from sam4em.progress import progress

# block labels in the work folder: written once, read once, so fast over small
_CODEC = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.BITSHUFFLE)


def component_block_ids(plan: str | os.PathLike[str], settings: ComponentSettings) -> list[str]:
    """Ids of the components blocks of the volume a ``blocks.json`` was planned for."""
    planned = read_plan(plan)
    block = settings.block_for(planned.volume_shape, planned.settings.chunks)
    return [name for name, _, _ in named_cores(planned.volume_shape, block)]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


@dataclass(frozen=True)
class ComponentJobs:
    """The jobs of one class: where they read (``pred``), write (``out``, the instances
    store; ``work``, the per-block files) and with which settings."""

    settings: ComponentSettings
    pred: Path
    cls: str
    out: Path
    work: Path

    def __post_init__(self) -> None:
        probs = self._probs
        block = self.settings.block_for(probs.shape, probs.chunks)
        if why := chunk_misfit(block, probs.chunks):
            raise InputDataError(
                f"components block_shape: {why} of {self.pred}: set components.block_shape "
                "to a multiple"
            )

    # what every job derives from pred.zarr, opened once a job
    @cached_property
    def _root(self) -> Any:
        return PREDICTION.open(self.pred)

    @cached_property
    def _probs(self) -> Any:
        return class_array(self._root, self.pred, self.cls)

    @property
    def voxel_nm(self) -> list[float]:
        """Voxel size (z, y, x) of the prediction."""
        return list(self._root.attrs.get("voxel_size_nm", [1.0, 1.0, 1.0]))

    @property
    def level(self) -> int:
        """The uint8 probability cut of the class."""
        return self.settings.level(self.cls, self._root.attrs.get("thresholds"))

    def blocks(self) -> list[tuple[str, tuple[int, int, int], Box]]:
        """(id, grid index, core) of every block."""
        probs = self._probs
        return named_cores(probs.shape, self.settings.block_for(probs.shape, probs.chunks))

    def _block(self, block_id: str) -> tuple[int, Box]:
        for i, (name, _, core) in enumerate(self.blocks()):
            if name == block_id:
                return i, core
        raise InputDataError(f"no block '{block_id}' in the components grid of {self.pred}")

    def path(self, name: str) -> Path:
        """A file of the work folder."""
        return self.work / name

    # the jobs
    def label(self, block_id: str) -> int:
        """Label one block (cleaned mask); returns its number of labels."""
        probs, level = self._probs, self.level
        _, box = self._block(block_id)
        cleanup = self.settings.cleanup(self.voxel_nm)
        read = cleaned_reader(
            lambda b: np.asarray(probs[b.slices()]) >= level, probs.shape, cleanup
        )
        probability = lambda b: np.asarray(probs[b.slices()]) / 255.0  # noqa: E731
        mask, measure = read_with_measures(read, box, probs.shape, probability)
        local, summary = label_block(mask, box, self.settings.connectivity, measure)
        labels = local.astype(np.min_scalar_type(summary.n), copy=False)
        packed = np.frombuffer(_CODEC.encode(np.ascontiguousarray(labels)), np.uint8)
        arrays = summary.to_arrays() | {
            "labels": packed,
            "labels_shape": np.array(labels.shape),
            "labels_dtype": np.array(labels.dtype.str),
        }
        _save_npz(self.path(f"{block_id}.npz"), arrays)
        return summary.n

    def _summary(self, block_id: str) -> BlockSummary:
        with np.load(self.path(f"{block_id}.npz")) as f:
            return BlockSummary.from_arrays(f)

    def _labels(self, block_id: str) -> np.ndarray:
        with np.load(self.path(f"{block_id}.npz")) as f:
            raw = _CODEC.decode(f["labels"])
            dtype = np.dtype(str(f["labels_dtype"]))
            return np.frombuffer(raw, dtype).reshape(tuple(f["labels_shape"]))

    def contacts(self, block_id: str) -> int:
        """Pairs of this block's labels that touch its neighbours'; returns how many."""
        blocks = self.blocks()
        index, _ = self._block(block_id)
        grid = [max(b[1][axis] for b in blocks) + 1 for axis in range(3)]
        cache: dict[int, BlockSummary] = {}

        def summary(i: int) -> BlockSummary:
            if i not in cache:
                cache[i] = self._summary(blocks[i][0])
            return cache[i]

        pairs = block_contacts(index, grid, summary, self.settings.connectivity)
        buffer = io.BytesIO()
        np.save(buffer, pairs)
        write_bytes_atomic(self.path(f"{block_id}.pairs.npy"), buffer.getvalue())
        return len(pairs)

    def merge(self) -> int:
        """Merge all blocks' labels into objects, filter them and create the (empty)
        class array under a temporary name; returns the number of objects."""
        names = [name for name, _, _ in self.blocks()]
        summaries = [self._summary(n) for n in names]
        contacts = np.concatenate(
            [np.zeros((0, 4), np.int64)] + [np.load(self.path(f"{n}.pairs.npy")) for n in names]
        )
        smallest = self.settings.min_voxels_for(self.voxel_nm)
        merged = merge_blocks(summaries, contacts, smallest, self.settings.min_z)
        np.save(self.path("final.npy.tmp.npy"), merged.ids.final)
        os.replace(self.path("final.npy.tmp.npy"), self.path("final.npy"))
        write_bytes_atomic(self.path("table.csv"), merged.table.to_csv(index=False).encode())
        target = self._create_target()
        write_json_atomic(
            self.path("merge.json"),
            {"target": target, "objects": len(merged.table), "offsets": merged.ids.offsets.tolist(),
             "min_voxels": smallest},
        )  # fmt: skip
        return len(merged.table)

    def _create_target(self) -> str:
        probs, out = self._probs, self.out

        def build_root(tmp: Path) -> None:
            open_group(tmp, mode="w").attrs["sam4em"] = {"classes": [], "source": str(self.pred)}

        create_directory_once(out, build_root)
        remove_leftovers(out / self.cls)  # what an earlier, unfinished run left
        name = partial_name(out / self.cls).name
        group = open_group(out, mode="r+").create_group(name)
        # uint32 covers any volume below 2^32 voxels, and object counts below that
        dtype = "uint32" if int(np.prod(probs.shape)) < 2**32 else "uint64"
        create_array(group, LEVEL0, probs.shape, probs.chunks, dtype)
        create_levels(group, *self._block_levels())
        return name

    def _block_levels(self) -> tuple[list[str], list[int]]:
        """Names and factors of level 0 and the levels the relabel jobs write."""
        probs = self._probs
        block = self.settings.block_for(probs.shape, probs.chunks)
        return block_pyramid(probs.shape, probs.chunks, block)

    def _merged(self) -> tuple[dict[str, Any], IdTable]:
        record = json.loads(self.path("merge.json").read_text(encoding="utf-8"))
        final = np.load(self.path("final.npy"), mmap_mode="r")
        return record, IdTable(np.asarray(record["offsets"], np.int64), final)

    def relabel(self, block_id: str) -> None:
        """Write one block's final ids into the class array, then its done marker."""
        record, id_table = self._merged()
        index, box = self._block(block_id)
        group = open_group(self.out / record["target"], mode="r+")
        target, levels = group[LEVEL0], self._block_levels()
        labels, lookup = self._labels(block_id), id_table.block_lookup(index)
        # one chunk deep at a time: memory is that of a slab, not of the block's ids
        step = target.chunks[0]
        for z in range(0, len(labels), step):
            ids = relabel_block(labels[z : z + step], lookup, target.dtype)
            start = (box.start[0] + z, *box.start[1:])
            stop = (start[0] + len(ids), *box.stop[1:])
            target[tuple(map(slice, start, stop))] = ids
            write_block_levels(group, *levels, start, stop, "mode", ids)
        write_bytes_atomic(self.path(f"{block_id}.done"), b"")

    def finish(self, objects_csv: str | os.PathLike[str]) -> pd.DataFrame:
        """Viewer levels and metadata, the array under its final name, the object table."""
        record, _ = self._merged()
        built = self.out / record["target"]
        if not built.is_dir():
            raise InputDataError(f"{built}: missing; rerun the components merge step")
        group, voxel = open_group(built, mode="r+"), self.voxel_nm
        cleanup = self.settings.cleanup(voxel)
        done = len(self._block_levels()[0]) - 1
        write_pyramid(group, f"{self.cls} objects", voxel, "mode", done=done)
        group.attrs["sam4em"] = {
            "threshold": self.level / 255,
            "objects": record["objects"],
            "min_voxels": record["min_voxels"],
            "open_px": list(cleanup.open_px),
            "close_px": list(cleanup.close_px),
        }
        final = self.out / self.cls
        if final.exists():
            shutil.rmtree(final)
        built.rename(final)
        table = with_physical_units(pd.read_csv(self.path("table.csv")), voxel, self._probs.shape)
        write_bytes_atomic(objects_csv, table.to_csv(index=False).encode())
        return table


def components_for_class(
    settings: ComponentSettings,
    pred: str | os.PathLike[str],
    cls: str,
    out: str | os.PathLike[str],
    objects_csv: str | os.PathLike[str],
) -> pd.DataFrame:
    """Every job of one class in this process (work files in a temporary folder beside
    ``out``); returns the object table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".components-{cls}-") as work:
        jobs = ComponentJobs(settings, Path(pred), cls, out, Path(work))
        names = [name for name, _, _ in jobs.blocks()]
        with progress(total=3 * len(names) + 1, desc=f"components {cls}", unit="job") as bar:
            for step in (jobs.label, jobs.contacts):
                for name in names:
                    step(name)
                    bar.update(1)
            jobs.merge()
            bar.update(1)
            for name in names:
                jobs.relabel(name)
                bar.update(1)
        return jobs.finish(objects_csv)


def with_physical_units(
    table: pd.DataFrame, voxel_nm: list[float], shape: Sequence[int]
) -> pd.DataFrame:
    """Add ``volume_nm3`` and centroids in nm to a merged object table, and turn its sums
    of measures into the confidence, uncertainty, surface and shape columns
    (:func:`~sam4em.postprocess.object_measures.object_columns`; a volume of ``shape``)."""
    table = table.copy()
    table.insert(2, "volume_nm3", table["voxels"] * float(np.prod(voxel_nm)))
    for i, axis in enumerate("zyx"):
        table[f"centroid_{axis}_nm"] = table[f"centroid_{axis}"] * float(voxel_nm[i])
    return object_columns(table, voxel_nm, shape)
