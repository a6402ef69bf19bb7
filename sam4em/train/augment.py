"""Augmentations of training examples; every slice of a sequence gets the same transform.

Flips, 90-degree rotations, intensity changes (brightness, contrast, gamma), a mild
elastic deformation (a smooth random displacement field, a few pixels in size) and, for
sequences, reversal along z (so a memory pass up the stack is in distribution too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates


@dataclass(frozen=True)
class AugmentSettings:
    """Strengths and probabilities of each augmentation."""

    flip: bool = True
    rot90: bool = True
    intensity: float = 0.15  # max relative brightness/contrast change; gamma in exp(+-x)
    elastic_p: float = 0.25  # probability of an elastic deformation
    elastic_alpha: float = 4.0  # displacement in pixels
    elastic_sigma: float = 10.0  # smoothness of the displacement field in pixels
    z_reverse: bool = True  # sequences: reverse the slice order half of the time


def _elastic(images: np.ndarray, labels: np.ndarray, s: AugmentSettings, rng: np.random.Generator):
    size = images.shape[-2:]
    dy, dx = (
        gaussian_filter(rng.uniform(-1, 1, size), s.elastic_sigma, mode="constant")
        for _ in range(2)
    )
    scale = s.elastic_alpha / max(np.abs(dy).max(), np.abs(dx).max(), 1e-6)
    yy, xx = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    coords = np.stack([yy + dy * scale, xx + dx * scale])
    warp = lambda a, order: map_coordinates(a, coords, order=order, mode="reflect")  # noqa: E731
    images = np.stack([warp(im.astype(np.float32), 1) for im in images])
    labels = np.stack([[warp(c, 0) for c in lab] for lab in labels])
    return images, labels


def augment(
    images: np.ndarray, labels: np.ndarray, s: AugmentSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment images (T, S, S) and labels (T, C, S, S) together; returns float32 images."""
    images = images.astype(np.float32)
    if s.z_reverse and len(images) > 1 and rng.random() < 0.5:
        images, labels = images[::-1], labels[::-1]
    if s.flip and rng.random() < 0.5:
        images, labels = images[..., ::-1], labels[..., ::-1]
    if s.flip and rng.random() < 0.5:
        images, labels = images[..., ::-1, :], labels[..., ::-1, :]
    if s.rot90:
        k = int(rng.integers(4))
        images, labels = np.rot90(images, k, axes=(-2, -1)), np.rot90(labels, k, axes=(-2, -1))
    if s.elastic_p > 0 and rng.random() < s.elastic_p:
        images, labels = _elastic(images, labels, s, rng)
    if s.intensity > 0:
        x = s.intensity
        gain, shift = rng.uniform(1 - x, 1 + x), rng.uniform(-x, x) * 255
        gamma = float(np.exp(rng.uniform(-x, x)))
        images = 255.0 * (np.clip(images, 0, 255) / 255.0) ** gamma
        images = np.clip((images - 127.5) * gain + 127.5 + shift, 0, 255)
    return np.ascontiguousarray(images, dtype=np.float32), np.ascontiguousarray(labels)
