"""Gaussian mixtures with isotropic components: exact velocity field and flow map.

Component k, N(mu_k, sigma_k^2 I), has marginal N(t mu_k, s_k^2 I) at time t with
s_k^2 = (1 - t)^2 + t^2 sigma_k^2. The velocity is the posterior-weighted mixture of the
component velocities (E[x_1 - x_0 | x_t, k] is linear in x_t), and the exact flow map is its
ODE, integrated here with fine RK4 in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mixture:
    means: np.ndarray  # (K, D)
    stds: np.ndarray  # (K,)
    weights: np.ndarray  # (K,), sums to 1

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return (self.means[k] + self.stds[k, None] * rng.standard_normal((n, self.dim))).astype(np.float32)

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        var = (1.0 - t) ** 2 + t**2 * self.stds**2  # (K,)
        centred = x[:, None, :] - t * self.means[None]  # (N, K, D)
        log_w = np.log(self.weights)[None] - 0.5 * np.sum(centred**2, -1) / var[None] - 0.5 * self.dim * np.log(var)[None]
        log_w -= log_w.max(axis=1, keepdims=True)
        w = np.exp(log_w)
        w /= w.sum(axis=1, keepdims=True)
        coef = (t * self.stds**2 - (1.0 - t)) / var  # (K,)
        v_k = self.means[None] + coef[None, :, None] * centred
        return np.einsum("nk,nkd->nd", w, v_k)

    def flow(self, x0: np.ndarray, t0: float = 0.0, t1: float = 1.0, steps: int = 1000) -> np.ndarray:
        """Solve dx/dt = v(x, t) from t0 to t1 with RK4 (float64)."""
        x = np.asarray(x0, np.float64)
        h = (t1 - t0) / steps
        for i in range(steps):
            t = t0 + i * h
            k1 = self.velocity(x, t)
            k2 = self.velocity(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = self.velocity(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = self.velocity(x + h * k3, t + h)
            x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x


def ring_mixture(num_modes: int = 8, radius: float = 2.0, std: float = 0.15) -> Mixture:
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return Mixture(means=means, stds=np.full(num_modes, std), weights=np.full(num_modes, 1.0 / num_modes))


def grid_mixture(side: int = 5, spacing: float = 1.0, std: float = 0.08) -> Mixture:
    coords = (np.arange(side) - (side - 1) / 2) * spacing
    means = np.stack(np.meshgrid(coords, coords), axis=-1).reshape(-1, 2)
    k = len(means)
    return Mixture(means=means, stds=np.full(k, std), weights=np.full(k, 1.0 / k))
