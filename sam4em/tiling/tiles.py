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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam4em.crops import Crop, of_role, volume_crops
from sam4em.data.z_index import breaks_in, gaps, run_of, volume_z_index
from sam4em.errors import InputDataError
from sam4em.io.atomic import atomic_directory, check_output_target
from sam4em.io.zarr_store import LABELLED, TILES, VOLUME, create_array, open_group, truth_array
from sam4em.progress import progress
from sam4em.tiling.resample import input_span, resample, scaled_plane
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


def _pad_to(image: np.ndarray, size: int, value: int = 0) -> np.ndarray:
    pad = [(0, max(0, size - s)) for s in image.shape[-2:]]
    if not any(p for _, p in pad):
        return image
    return np.pad(image, [(0, 0)] * (image.ndim - 2) + pad, constant_values=value)


UNKNOWN = 255  #: a label tile's value where the labels are unknown (outside a crop, ignored)


@dataclass(frozen=True)
class _CropTiles:
    """Where one crop's tiles lie: its stored slices (context first) and tile corners."""

    crop: Crop
    z_all: range  # context slices (raw only) then the crop's own slices
    context: int
    ys: list[int]  # tile starts on the model grid
    xs: list[int]

    @property
    def per_slice(self) -> int:
        return len(self.ys) * len(self.xs)


def _crop_tiles(
    crop: Crop, split: str, tiling: TilingSettings, plane: tuple[int, int], z_index: list[int]
) -> _CropTiles:
    """The tiles of ``crop``: every lattice tile over its box on the model grid (one
    centred tile when the box is smaller; the raw around it is real context) and, for
    stage 2, up to T - 1 raw slices before it from its first slice's own run."""
    lattice, scale = tiling.lattice, tiling.scale
    (z0, z1), (y0, y1), (x0, x1) = crop.box
    scaled = scaled_plane(plane, scale)
    span = [
        (int(np.floor(a * n / full)), min(n, int(np.ceil(b * n / full))))
        for (a, b), n, full in zip(((y0, y1), (x0, x1)), scaled, plane, strict=True)
    ]
    ys, xs = (lattice.covering(n, a, b) for n, (a, b) in zip(scaled, span, strict=True))
    first = z0
    if split in ("train", "val"):
        first = max(run_of(z_index, z0).start, z0 - (tiling.sequence_length - 1))
    return _CropTiles(crop, range(first, z1), z0 - first, ys, xs)


def _plane_window(
    arrays: dict[str, Any],
    z: int,
    plane: tuple[int, int],
    box: tuple[int, int, int, int],
    scale: float,
) -> dict[str, np.ndarray]:
    """Slice ``z`` of each array (a 2D array: the same plane for every z), read only
    where model-grid box (y0, y1, x0, x1) needs it and resampled onto that box: grey for
    ``raw``, fractions for the rest."""
    scaled = scaled_plane(plane, scale)
    (fy, ly), (fx, lx) = (
        input_span(full, n, a, b)
        for full, n, (a, b) in zip(plane, scaled, (box[:2], box[2:]), strict=True)
    )
    out = {}
    for name, arr in arrays.items():
        window = np.asarray(arr[fy:ly, fx:lx] if arr.ndim == 2 else arr[z, fy:ly, fx:lx])
        out[name] = resample(window, plane, scaled, (fy, fx), box, grey=name == "raw")
    return out


def write_tiles(
    volume: str | os.PathLike[str],
    split: str,
    tiling: TilingSettings,
    out: str | os.PathLike[str],
) -> Path:
    """Write the tiles of the crops of role ``split`` of ``volume`` to ``out`` (see the
    module docstring); ``out`` may replace an earlier tile store, never anything else
    or the volume. Only the crops' boxes and the context around them are read."""
    check_output_target(out, [volume])
    root = VOLUME.open(volume)
    meta = dict(root.attrs["sam4em"])
    classes: list[str] = meta["classes"]
    labelled: list[str] = meta["labelled_classes"]
    if not labelled:
        raise InputDataError(f"{volume}: dataset has no labels; training tiles need labels")
    if "crops" not in meta:
        raise InputDataError(
            f"{volume}: imported by an older sam4em without crops; delete it and run the "
            "workflow again"
        )
    crops = of_role(volume_crops(meta), split)
    if not crops:
        raise InputDataError(f"{volume}: no crop or split range has role {split}")
    raw = root["raw"]
    plane = (int(raw.shape[1]), int(raw.shape[2]))
    z_index = volume_z_index(meta, raw.shape[0])
    arrays = {"raw": raw, LABELLED: root[LABELLED]}
    arrays |= {cls: truth_array(root, cls) for cls in labelled}
    parts = [_crop_tiles(c, split, tiling, plane, z_index) for c in crops]
    after_gap = set(gaps(z_index))
    run_ids = [np.cumsum([k in after_gap for k in p.z_all]) for p in parts]
    longest = max(int(np.sum(r == v)) for r in run_ids for v in np.unique(r))
    seq_len = min(tiling.sequence_length, longest)
    size, n_classes = tiling.lattice.tile, len(classes)
    n = sum(len(p.z_all) * p.per_slice for p in parts)

    with atomic_directory(out, TILES) as tmp:
        grp = open_group(tmp, mode="w")
        images = create_array(grp, "images", (n, size, size), (1, size, size), "uint8", None)
        labels = create_array(
            grp, "labels", (n, n_classes, size, size), (1, n_classes, size, size), "uint8", None
        )
        presence = np.zeros((n, n_classes), np.float32)
        origin = np.zeros((n, 3), np.int32)
        scored = np.zeros(n, np.uint8)
        seqs, idx, records = [], 0, []
        total = sum(len(p.z_all) for p in parts)
        with progress(total=total, desc=f"tile {split}", unit="slice", leave=False) as bar:
            for part, run_id in zip(parts, run_ids, strict=True):
                records.append(part.crop.to_json() | {"context_slices": part.context,
                               "tiles_per_slice": part.per_slice, "first_tile": idx})  # fmt: skip
                first = idx
                for si, z in enumerate(part.z_all):
                    own = si >= part.context
                    imgs, labs = _slice_tiles(
                        arrays, z, part, plane, tiling, classes, labelled, own
                    )
                    k = len(imgs)
                    images[idx : idx + k] = imgs
                    labels[idx : idx + k] = labs
                    presence[idx : idx + k] = (labs == 1).mean(axis=(2, 3))
                    origin[idx : idx + k] = [(z, y, x) for y in part.ys for x in part.xs]
                    scored[idx : idx + k] = own
                    idx += k
                    bar.update(1)
                seqs += _windows(part, run_id, seq_len, first)
        grp.create_array("presence", data=presence, chunks=presence.shape)
        grp.create_array("origin", data=origin, chunks=origin.shape)
        grp.create_array("scored", data=scored, chunks=scored.shape)
        seq_arr = np.array(seqs, dtype=np.int32).reshape(-1, seq_len)
        grp.create_array("sequences", data=seq_arr, chunks=(max(1, len(seq_arr)), seq_len))
        own_z = sorted({z for c in crops for z in c.z})
        grp.attrs["sam4em"] = {
            "dataset": meta["dataset"],
            "import_id": meta.get("import_id"),  # the volume import the tiles come from
            "split": split,
            "slices": [own_z[0], own_z[-1]],
            "crops": records,
            "context_slices": parts[0].context,
            "tile_size": size,
            "stride": tiling.lattice.stride,
            "scale": tiling.scale,
            "classes": classes,
            "labelled_classes": labelled,
            "sequence_length": seq_len,
            "z_gaps": sum(len(breaks_in(z_index, p.z_all.start, p.z_all.stop)) for p in parts),
            "tiles_per_slice": parts[0].per_slice,
            "class_tile_fraction": {
                c: float((presence[:, i] > 0).mean()) for i, c in enumerate(classes)
            },
        }
    return Path(out)


def _slice_tiles(
    arrays: dict[str, Any],
    z: int,
    part: _CropTiles,
    plane: tuple[int, int],
    tiling: TilingSettings,
    classes: list[str],
    labelled: list[str],
    own: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The image and label tiles of slice ``z`` of a crop: labels are 0/1 where the crop
    knows them (every input pixel of a model pixel painted and inside the crop's box) and
    :data:`UNKNOWN` elsewhere (context slices: unknown throughout)."""
    size, scale = tiling.lattice.tile, tiling.scale
    scaled = scaled_plane(plane, scale)
    box = (
        part.ys[0], min(scaled[0], part.ys[-1] + size),
        part.xs[0], min(scaled[1], part.xs[-1] + size),
    )  # fmt: skip
    wanted = arrays | {"inside": _BoxMask(part.crop)} if own else {"raw": arrays["raw"]}
    data = _plane_window(wanted, z, plane, box, scale)
    img = _pad_to(data["raw"], size, 0)
    lab = np.full((len(classes), *img.shape), UNKNOWN, np.uint8)
    if own:
        h, w = data["raw"].shape
        known = (data[LABELLED] >= 1 - 1e-6) & (data["inside"] >= 1 - 1e-6)
        for ci, cls in enumerate(classes):
            if cls in labelled:
                mask = (data[cls] >= 0.5).astype(np.uint8)
                lab[ci, :h, :w] = np.where(known, mask, UNKNOWN)
            else:
                lab[ci] = 0
    ys = [y - part.ys[0] for y in part.ys]
    xs = [x - part.xs[0] for x in part.xs]
    imgs = np.stack([img[y : y + size, x : x + size] for y in ys for x in xs])
    labs = np.stack([lab[:, y : y + size, x : x + size] for y in ys for x in xs])
    return imgs, labs


class _BoxMask:
    """A crop's y/x box as a lazily indexed 0/1 plane (1 inside), for :func:`_plane_window`."""

    ndim = 2

    def __init__(self, crop: Crop) -> None:
        (_, _), self.ys, self.xs = crop.box

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        (sy, sx) = index
        y = np.arange(sy.start, sy.stop)
        x = np.arange(sx.start, sx.stop)
        iy = (y >= self.ys[0]) & (y < self.ys[1])
        ix = (x >= self.xs[0]) & (x < self.xs[1])
        return (iy[:, None] & ix[None, :]).astype(np.float32)


def _windows(part: _CropTiles, run_id: np.ndarray, seq_len: int, first: int) -> list[list[int]]:
    """Tile indices of every window of ``seq_len`` neighbouring slices of a crop (no gap
    inside) that ends at one of its own slices, one per tile position."""
    if seq_len < 2:
        return []
    n = len(part.z_all)
    starts = [
        s0
        for s0 in range(max(0, part.context - seq_len + 1), n - seq_len + 1)
        if run_id[s0] == run_id[s0 + seq_len - 1]
    ]
    per = part.per_slice
    return [
        [first + (s0 + t) * per + p for t in range(seq_len)] for s0 in starts for p in range(per)
    ]
