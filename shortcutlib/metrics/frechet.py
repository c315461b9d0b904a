"""The Fréchet distance between two Gaussians (light: numpy only)."""

from __future__ import annotations

import numpy as np


def psd_sqrt(sigma: np.ndarray, name: str = "covariance", rtol: float = 1e-6) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix, from its eigendecomposition.

    Eigenvalues below zero by more than ``rtol`` times the largest mean the matrix is no
    covariance (ValueError); smaller negative ones are rounding and count as zero.
    """
    sym = (sigma + sigma.T) / 2
    w, v = np.linalg.eigh(sym)
    scale = max(float(np.abs(w).max(initial=0.0)), 1e-300)
    if w.min(initial=0.0) < -rtol * scale:
        raise ValueError(f"the {name} is not positive semi-definite (eigenvalue {w.min():.3g}, largest {scale:.3g}).")
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2), as the trace of sqrt(R S2 R) with R = sqrt(S1): the same eigenvalues, but
    of a symmetric positive semi-definite matrix, so singular covariances need no special case."""
    root = psd_sqrt(sigma1, "first covariance")
    psd_sqrt(sigma2, "second covariance")  # checks it
    inner = root @ sigma2 @ root
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    # Eigenvalues at rounding level are zeros of a singular product; their square roots would not be.
    w = np.where(w > 1e-12 * max(float(w.max(initial=0.0)), 1e-300), w, 0.0)
    return float(np.sqrt(w).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), the quantity FID reports."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances differ in shape: {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
