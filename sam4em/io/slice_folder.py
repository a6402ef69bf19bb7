"""Folders of 2D slices (TIFF or PNG), one file per z slice, in natural sort order.

Hidden files (names starting with a dot, such as the ``._*`` files macOS leaves on
shared drives) and sub-folders are not slices and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from sam4em.errors import InputDataError
from sam4em.io.source import VolumeSource

SLICE_SUFFIXES = {".tif", ".tiff", ".png"}
_LUMA = np.array([0.299, 0.587, 0.114])


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``s2`` before ``s10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def to_single_channel(image: np.ndarray) -> np.ndarray:
    """Reduce a (y, x, c) image to (y, x): drop alpha; equal colour channels give
    that channel unchanged, otherwise ITU-R 601 luma rounded to the input's dtype."""
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"expected a 2D image, got shape {image.shape}")
    channels = image.shape[2]
    if channels in (2, 4):  # grey+alpha, RGB+alpha
        image = image[..., : channels - 1]
    if image.shape[2] == 1:
        return image[..., 0]
    if all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, image.shape[2])):
        return np.ascontiguousarray(image[..., 0])
    luma = image[..., :3].astype(np.float64) @ _LUMA
    return np.round(luma).astype(image.dtype)


def read_png(path: Path) -> np.ndarray:
    """Read one PNG slice as a 2D array (modes L, LA, RGB(A), P, 1, I;16, I)."""
    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        array = np.asarray(img)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return to_single_channel(array)


def read_tiff_slice(path: Path) -> np.ndarray:
    """Read one TIFF slice as a 2D array."""
    array = tifffile.imread(path)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    return to_single_channel(array)


def _header_shape(path: Path) -> tuple[tuple[int, int], np.dtype]:
    if path.suffix.lower() == ".png":
        with Image.open(path) as img:
            width, height = img.size
            sample = read_png(path) if img.mode not in ("L", "LA", "RGB", "RGBA") else None
        dtype = sample.dtype if sample is not None else np.dtype(np.uint8)
        return (height, width), dtype
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = page.shape
        dtype = np.dtype(page.dtype)
    if len(shape) == 3 and shape[-1] <= 4:
        shape = shape[:2]
    return (int(shape[-2]), int(shape[-1])), dtype


class SliceFolderSource(VolumeSource):
    """A folder whose TIFF or PNG files are the z slices, naturally sorted by name."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.name = str(folder)
        # hidden files (macOS's AppleDouble "._name.tif" among them) are not slices
        files = [
            p
            for p in folder.iterdir()
            if p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]
        if not files:
            raise InputDataError(f"{folder}: folder holds no .tif, .tiff or .png slices")
        self.files = sorted(files, key=lambda p: natural_key(p.name))
        shapes: dict[tuple[int, int], Path] = {}
        dtypes: dict[np.dtype, Path] = {}
        for path in self.files:
            try:
                shape, dtype = _header_shape(path)
            except Exception as exc:
                raise InputDataError(f"{path}: cannot read slice ({exc})") from None
            shapes.setdefault(shape, path)
            dtypes.setdefault(dtype, path)
        if len(dtypes) > 1:  # one intensity scale for all: mixed depths would be rescaled
            (d0, p0), (d1, p1) = list(dtypes.items())[:2]
            raise InputDataError(
                f"{folder}: slices differ in pixel type: {p1.name} is {d1}, the slices "
                f"before it ({p0.name} ...) are {d0}; convert them to one type"
            )
        if len(shapes) > 1:
            (s0, p0), (s1, p1) = list(shapes.items())[:2]
            raise InputDataError(
                f"{folder}: slices differ in size: {p0.name} is {s0[0]}x{s0[1]}, "
                f"{p1.name} is {s1[0]}x{s1[1]}"
            )
        (yx,) = shapes
        self._shape = (len(self.files), yx[0], yx[1])
        (self._dtype,) = dtypes

    def _read(self, z0: int, z1: int) -> np.ndarray:
        out = np.empty((z1 - z0, *self._shape[1:]), dtype=self._dtype)
        for i, path in enumerate(self.files[z0:z1]):
            try:
                image = read_png(path) if path.suffix.lower() == ".png" else read_tiff_slice(path)
            except Exception as exc:
                raise InputDataError(f"{path}: cannot read slice ({exc})") from None
            if image.shape != out.shape[1:]:
                raise InputDataError(
                    f"{path}: slice is {image.shape[0]}x{image.shape[1]}, "
                    f"expected {out.shape[1]}x{out.shape[2]}"
                )
            out[i] = image
        return out
