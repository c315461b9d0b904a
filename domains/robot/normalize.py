"""Per-dimension affine normalisation, fitted on training data and saved with the checkpoint.

``minmax`` maps each dimension's [min, max] to [-1, 1] (Diffusion Policy's choice for
actions, so the sampler's output range is the action range); ``meanstd`` standardises (for
observations). A dimension that is constant in the training data (range or std below
``eps``) keeps scale 1 and maps its value to 0, instead of dividing by ~0. The normaliser
is an affine map ``z = (x - offset) / scale``; it doubles as the action ``Codec``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Mode = Literal["minmax", "meanstd", "identity"]


class Normalizer:
    """``encode(x) = (x - offset) / scale`` over the last axis; ``decode`` inverts it."""

    def __init__(self, mode: Mode, offset: np.ndarray, scale: np.ndarray):
        if mode not in ("minmax", "meanstd", "identity"):
            raise ValueError(f"mode must be 'minmax', 'meanstd' or 'identity', got {mode!r}.")
        self.mode = mode
        self.offset = np.asarray(offset, np.float32).reshape(-1)
        self.scale = np.asarray(scale, np.float32).reshape(-1)
        if self.offset.shape != self.scale.shape:
            raise ValueError(f"offset {self.offset.shape} and scale {self.scale.shape} differ in shape.")
        if np.any(self.scale <= 0):
            raise ValueError("every scale must be positive.")

    @classmethod
    def fit(cls, x: np.ndarray, mode: Mode = "minmax", eps: float = 1e-4) -> Normalizer:
        """Statistics over all leading axes of ``x`` (..., dim)."""
        flat = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        if len(flat) == 0:
            raise ValueError("cannot fit a normaliser on no data.")
        if mode == "minmax":
            lo, hi = flat.min(0), flat.max(0)
            half = (hi - lo) / 2
            constant = half < eps / 2
            offset = np.where(constant, lo, (hi + lo) / 2)
            scale = np.where(constant, 1.0, half)
        elif mode == "meanstd":
            offset, std = flat.mean(0), flat.std(0)
            scale = np.where(std < eps, 1.0, std)
        elif mode == "identity":
            offset, scale = np.zeros(flat.shape[1]), np.ones(flat.shape[1])
        else:
            raise ValueError(f"mode must be 'minmax', 'meanstd' or 'identity', got {mode!r}.")
        return cls(mode, offset, scale)

    @property
    def dim(self) -> int:
        return len(self.offset)

    def encode(self, x: Any) -> Any:
        """Data space to normalised space; numpy in, numpy out (jax arrays stay jax)."""
        return (x - self.offset) / self.scale

    def decode(self, z: Any) -> Any:
        return z * self.scale + self.offset

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; float32 -> Python float -> float32 is exact."""
        return {"mode": self.mode, "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(d["mode"], np.asarray(d["offset"], np.float32), np.asarray(d["scale"], np.float32))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Normalizer)
            and self.mode == other.mode
            and np.array_equal(self.offset, other.offset)
            and np.array_equal(self.scale, other.scale)
        )

    def __repr__(self) -> str:
        return f"Normalizer(mode={self.mode!r}, dim={self.dim})"
