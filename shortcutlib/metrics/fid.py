"""Fréchet Inception Distance, computed as pytorch-fid computes it.

Pipeline: images (NHWC, values in [0, 1] or uint8) -> bilinear resize to 299x299
(torch's ``F.interpolate(mode="bilinear", align_corners=False)``, no antialiasing,
also when shrinking) -> scale to [-1, 1] -> FID Inception-V3 pool3 features (2048)
-> mean and covariance (float64) -> Fréchet distance (``shortcutlib.metrics.frechet``).

Reference statistics are ``.npz`` files with keys ``mu`` and ``sigma``, the format
pytorch-fid reads and writes; ``python -m shortcutlib.cli.fid_stats`` makes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shortcutlib.metrics.frechet import frechet_distance  # noqa: F401  (re-exported)
from shortcutlib.metrics.inception import FEATURE_DIM, FIDInceptionV3
from shortcutlib.metrics.inception_weights import load_inception


INCEPTION_SIZE = 299
_RANGE_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- preprocessing


@lru_cache(maxsize=32)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of torch's 1-D bilinear resize, align_corners=False.

    Each output sample mixes its two nearest inputs (no antialias filter), with the
    source index clamped at 0 and the upper neighbour clamped at the last input, as
    in torch's ``upsample_bilinear2d``. The arithmetic is torch's float32 with a
    fused multiply-add for ``scale * (dst + 0.5) - 0.5`` (exact in float64, rounded
    once), which reproduces torch's CPU weights bit for bit.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float64)
    src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo.astype(np.float32)
    weights = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, lo), np.float32(1.0) - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


def preprocess(images: jax.Array, size: int = INCEPTION_SIZE) -> jax.Array:
    """(B, H, W, 3) in [0, 1] -> (B, size, size, 3) in [-1, 1], as pytorch-fid's InceptionV3 input."""
    _, height, width, _ = images.shape
    x = images.astype(jnp.float32)
    # A same-size torch resize is the identity; skip the no-op matmul.
    if height != size:
        x = jnp.einsum("oh,bhwc->bowc", resize_matrix(height, size), x, precision=jax.lax.Precision.HIGHEST)
    if width != size:
        x = jnp.einsum("ow,bhwc->bhoc", resize_matrix(width, size), x, precision=jax.lax.Precision.HIGHEST)
    return 2.0 * x - 1.0


def to_unit_rgb(images: np.ndarray) -> np.ndarray:
    """Host-side check and conversion: uint8 or float [0, 1], 1 or 3 channels -> float32 RGB."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (N, H, W, C), got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
        lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
        if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(
                f"float images must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}): "
                "map them there (e.g. (x + 1) / 2 for [-1, 1], x / 255 for [0, 255]) and clip"
            )
    else:
        raise TypeError(f"images must be uint8 or float, got {images.dtype}")
    channels = images.shape[-1]
    if channels == 1:  # grayscale, replicated as PIL's convert('RGB') does
        images = np.repeat(images, 3, axis=-1)
    elif channels != 3:
        raise ValueError(f"images must be channels-last with 1 or 3 channels, got shape {images.shape}")
    return images


# ----------------------------------------------------------------------------- features


_preprocess_jit = jax.jit(preprocess)


@partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


class InceptionFeatures:
    """Jitted pool3 feature extraction in fixed-size batches (the last one padded)."""

    def __init__(self, inception: FIDInceptionV3 | str | os.PathLike | None = None, batch_size: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        model = inception if isinstance(inception, FIDInceptionV3) else load_inception(inception)
        self.graphdef, self.state = nnx.split(model)
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 or [0, 1] float -> (N, 2048) float32 features."""
        images = to_unit_rgb(images)
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            n = len(chunk)
            # Pad to one batch shape so that the network compiles once.
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)])
            x = _preprocess_jit(jnp.asarray(chunk))
            out.append(np.asarray(_forward(self.graphdef, self.state, x))[:n])
        if not out:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.concatenate(out)


def _as_features(inception, batch_size: int) -> InceptionFeatures:
    if isinstance(inception, InceptionFeatures):
        return inception
    return InceptionFeatures(inception, batch_size=batch_size)


# ----------------------------------------------------------------------------- statistics


class RunningStatistics:
    """Mean and unbiased covariance (``np.cov`` semantics) accumulated in float64.

    Sums are taken about the first batch's mean so that 50k x 2048 features need
    neither to be kept in memory nor suffer cancellation.
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) == 0:
            if features.size == 0:
                return
            raise ValueError(f"features must be (N, D), got shape {features.shape}")
        if self._shift is None:
            dim = features.shape[1]
            self._shift = features.mean(axis=0)
            self._sum = np.zeros(dim)
            self._outer = np.zeros((dim, dim))
        centered = features - self._shift
        self._sum += centered.sum(axis=0)
        self._outer += centered.T @ centered
        self.count += len(features)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.count}")
        mean_centered = self._sum / self.count
        mu = self._shift + mean_centered
        sigma = (self._outer - self.count * np.outer(mean_centered, mean_centered)) / (self.count - 1)
        return mu, sigma


def compute_statistics(
    images_iter: Iterable[np.ndarray],
    inception: FIDInceptionV3 | InceptionFeatures | str | os.PathLike | None = None,
    *,
    batch_size: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of pool3 features over batches of images.

    ``images_iter`` yields (N, H, W, C) arrays, uint8 or float in [0, 1], C in {1, 3};
    sizes may differ between batches. ``inception`` is a loaded model, a feature
    extractor, a weights path, or None for ``$SHORTCUTLIB_FID_WEIGHTS``.
    """
    features = _as_features(inception, batch_size)
    stats = RunningStatistics()
    for batch in images_iter:
        stats.update(features(batch))
    return stats.result()


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object keeps the name as given (no added .npz)
        np.savez(f, mu=mu, sigma=sigma)
    return path


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"FID statistics '{path}' not found: write them with "
            "`python -m shortcutlib.cli.fid_stats --images-dir DIR|--npy FILE --weights FILE --out STATS.npz`"
        )
    with np.load(path) as data:
        return data["mu"][:], data["sigma"][:]


# ----------------------------------------------------------------------------- distance


def compute_fid(
    images_iter: Iterable[np.ndarray],
    reference: str | os.PathLike | tuple[np.ndarray, np.ndarray],
    inception: FIDInceptionV3 | InceptionFeatures | str | os.PathLike | None = None,
    *,
    batch_size: int = 50,
) -> float:
    """FID of generated images against reference statistics (a ``.npz`` path or (mu, sigma))."""
    mu_ref, sigma_ref = reference if isinstance(reference, tuple) else load_statistics(reference)
    mu, sigma = compute_statistics(images_iter, inception, batch_size=batch_size)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)
