"""2-D toy distributions; the mixtures also know their exact flow map."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from domains.toy.mixture import Mixture, grid_mixture, ring_mixture


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2.0 - 2.0 + (np.floor(x1) % 2)
    return np.stack([x1, x2], axis=1).astype(np.float32)


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=int(rng.integers(2**31)))
    return ((x - np.array([0.5, 0.25])) * 1.5).astype(np.float32)


MIXTURES: dict[str, Callable[[], Mixture]] = {"gmm_ring": ring_mixture, "gmm_grid": grid_mixture}
SAMPLERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {"checkerboard": checkerboard, "moons": moons}
NAMES = sorted([*MIXTURES, *SAMPLERS])


def make_sampler(name: str) -> tuple[Callable[[int, np.random.Generator], np.ndarray], Mixture | None]:
    """The sampler of a named distribution, and its Mixture when the exact flow is known."""
    if name in MIXTURES:
        mixture = MIXTURES[name]()
        return mixture.sample, mixture
    if name in SAMPLERS:
        return SAMPLERS[name], None
    raise ValueError(f"Unknown toy dataset '{name}'. Accepted: {', '.join(NAMES)}.")
