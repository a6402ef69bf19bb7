"""Cut the slices of one split into model-sized 2D tiles and z-sequences.

``tiles/{split}.zarr`` holds (zarr v3, Blosc/Zstd)::

    images     (N, S, S) uint8          one tile per (slice, y, x) position
    labels     (N, C, S, S) uint8 0/1   classes in config order; unlabelled classes stay 0
    presence   (N, C) float32           fraction of the tile's pixels in each class
    origin     (N, 3) int32             z (volume slice), y, x (after scaling) of the tile
    scored     (N,) uint8               1: a tile of the split; 0: a raw-only context tile
    sequences  (M, T) int32             indices into images: T neighbouring slices, same y, x

The val split also stores, as context, the T - 1 raw slices before each of its slices
(their labels are never read, their label tiles stay 0), and its sequences are the
windows that end at a val slice: stage-2 validation then warms the memory up exactly as
inference does, and scores only each window's last slice. Other splits have no context
and every window of T slices inside the split. Windows never span a gap in z
(:mod:`sam4em.data.z_index`): val context comes only from the first val slice's own
run, T is clamped to the longest run of neighbouring slices, and a split without two
neighbouring slices has no sequences (stage 2 is then skipped).

Attributes record the split, slices, tile size, stride, scale, classes, which classes
are labelled, the context slices and the sequence length T (clamped to the slices
available).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sam4em.data.z_index import breaks_in, gaps, run_of, volume_z_index
from sam4em.errors import InputDataError
from sam4em.io.atomic import atomic_directory, check_output_target
from sam4em.io.zarr_store import TILES, VOLUME, create_array, open_group, truth_array
from sam4em.progress import progress
from sam4em.tiling.resample import resample, scaled_plane
from sam4em.tiling.settings import TilingSettings


def rescale_slice(image: np.ndarray, scale: float, is_mask: bool) -> np.ndarray:
    """Resize a 2D slice by ``scale`` (see :mod:`sam4em.tiling.resample`); masks are
    resampled as fractions and thresholded at 0.5."""
    if scale == 1.0:
        return image
    shape = scaled_plane(image.shape, scale)
    if is_mask:
        return (resample(image, image.shape, shape) >= 0.5).astype(np.uint8)
    return resample(image, image.shape, shape, grey=True)


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    pad = [(0, max(0, size - s)) for s in image.shape[-2:]]
    if not any(p for _, p in pad):
        return image
    return np.pad(image, [(0, 0)] * (image.ndim - 2) + pad)


def write_tiles(
    volume: str | os.PathLike[str],
    split: str,
    slices: range,
    tiling: TilingSettings,
    out: str | os.PathLike[str],
) -> Path:
    """Write the tiles of ``slices`` of ``volume`` to ``out`` (see the module docstring);
    ``out`` may replace an earlier tile store, never anything else or the volume."""
    check_output_target(out, [volume])
    root = VOLUME.open(volume)
    meta = dict(root.attrs["sam4em"])
    classes: list[str] = meta["classes"]
    labelled: list[str] = meta["labelled_classes"]
    if not labelled:
        raise InputDataError(f"{volume}: dataset has no labels; training tiles need labels")
    raw = root["raw"]
    nz = raw.shape[0]
    if slices.start < 0 or slices.stop > nz or len(slices) == 0:
        raise InputDataError(
            f"{volume}: split {split} slices {slices.start}-{slices.stop - 1} are outside the "
            f"volume ({nz} slices)"
        )
    truth = {cls: truth_array(root, cls) for cls in labelled}
    lattice, scale = tiling.lattice, tiling.scale
    size, stride = lattice.tile, lattice.stride
    scaled_yx = scaled_plane(raw.shape, scale)
    ys, xs = lattice.starts(scaled_yx[0]), lattice.starts(scaled_yx[1])
    per_slice = len(ys) * len(xs)
    wanted = tiling.sequence_length
    z_index = volume_z_index(meta, nz)
    # val context: the slices before the split in its first slice's run (none across a gap)
    first = slices.start
    if split == "val":
        first = max(run_of(z_index, slices.start).start, slices.start - (wanted - 1))
    context = slices.start - first
    z_all = range(first, slices.stop)
    after_gap = set(gaps(z_index))
    run_id = np.cumsum([k in after_gap for k in z_all])  # run of each stored slice
    longest = max(int(np.sum(run_id == r)) for r in np.unique(run_id))
    seq_len = min(wanted, longest)
    n = len(z_all) * per_slice
    n_classes = len(classes)

    with atomic_directory(out, TILES) as tmp:
        grp = open_group(tmp, mode="w")
        images = create_array(grp, "images", (n, size, size), (1, size, size), "uint8", None)
        labels = create_array(
            grp, "labels", (n, n_classes, size, size), (1, n_classes, size, size), "uint8", None
        )
        presence = np.zeros((n, n_classes), np.float32)
        origin = np.zeros((n, 3), np.int32)
        for si, z in enumerate(progress(z_all, desc=f"tile {split}", unit="slice", leave=False)):
            img = _pad_to(rescale_slice(np.asarray(raw[z]), scale, False), size)
            lab = np.zeros((n_classes, *img.shape), np.uint8)
            for ci, cls in enumerate(classes):
                if cls in labelled and z in slices:
                    mask = rescale_slice(np.asarray(truth[cls][z]), scale, True)
                    lab[ci] = _pad_to(mask, size)
            idx = si * per_slice
            tile_imgs = np.stack([img[y : y + size, x : x + size] for y in ys for x in xs])
            tile_labs = np.stack([lab[:, y : y + size, x : x + size] for y in ys for x in xs])
            images[idx : idx + per_slice] = tile_imgs
            labels[idx : idx + per_slice] = tile_labs
            presence[idx : idx + per_slice] = tile_labs.mean(axis=(2, 3))
            origin[idx : idx + per_slice] = [(z, y, x) for y in ys for x in xs]
        grp.create_array("presence", data=presence, chunks=presence.shape)
        grp.create_array("origin", data=origin, chunks=origin.shape)
        scored = np.repeat((np.arange(len(z_all)) >= context).astype(np.uint8), per_slice)
        grp.create_array("scored", data=scored, chunks=scored.shape)
        # windows of seq_len neighbouring slices (no gap inside); with context, those that
        # end at a slice of the split; none when no two slices are neighbours
        starts = [
            s0
            for s0 in range(max(0, context - seq_len + 1), len(z_all) - seq_len + 1)
            if run_id[s0] == run_id[s0 + seq_len - 1] and seq_len > 1
        ]
        seqs = np.array(
            [
                [(s0 + t) * per_slice + p for t in range(seq_len)]
                for s0 in starts
                for p in range(per_slice)
            ],
            dtype=np.int32,
        ).reshape(-1, seq_len)
        grp.create_array("sequences", data=seqs, chunks=(max(1, len(seqs)), seq_len))
        grp.attrs["sam4em"] = {
            "dataset": meta["dataset"],
            "split": split,
            "slices": [slices.start, slices.stop - 1],
            "context_slices": context,
            "tile_size": size,
            "stride": stride,
            "scale": scale,
            "classes": classes,
            "labelled_classes": labelled,
            "sequence_length": seq_len,
            "z_gaps": len(breaks_in(z_index, first, slices.stop)),
            "tiles_per_slice": per_slice,
            "class_tile_fraction": {
                c: float((presence[:, i] > 0).mean()) for i, c in enumerate(classes)
            },
        }
    return Path(out)
