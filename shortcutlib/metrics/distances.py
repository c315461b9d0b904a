"""Distribution distances for vector data with known answers."""

from __future__ import annotations

import numpy as np


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, *, num_projections: int = 512, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size samples (rows are points).

    Averages the exact 1-D W2^2 over random directions (sorted projections), then takes the
    square root; zero iff the projected empirical distributions agree.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size samples, got {a.shape} and {b.shape}.")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa = np.sort(a @ dirs, axis=0)
    pb = np.sort(b @ dirs, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def frechet_distance_from_samples(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two samples (rows are feature vectors)."""
    from shortcutlib.metrics.frechet import frechet_distance

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
