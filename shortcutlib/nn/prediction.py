"""What the backbone's output means: the velocity itself, or the clean sample it implies.

Every objective trains and samples a velocity ``v(x_t, t, d)`` on the path
``x_t = (1 - t) x0 + t x1``. With ``prediction=data`` the backbone outputs an estimate
``x1_hat`` of the clean sample and the velocity is ``(x1_hat - x_t) / (1 - t)``, the velocity
that reaches ``x1_hat`` at ``t = 1``. The losses stay velocity losses; only the output changes
meaning. Why: a one-step sample at ``t = 0, d = 1`` is ``x0 + v``, so a velocity network must
reproduce ``-x0`` exactly to cancel the noise, and any error in that cancellation is noise
left in the sample; a data-predicting network outputs the sample directly (Li & He 2025,
"Back to Basics: Let Denoising Generative Models Denoise", argue the same for data on a
low-dimensional manifold). ``1 - t`` is clipped below at ``min_remaining`` so the velocity
stays finite as t -> 1.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

PREDICTIONS = ("velocity", "data")


class DataPrediction(nnx.Module):
    """Wrap a backbone that predicts x1 so that it answers with the velocity (x1_hat - x_t) / (1 - t)."""

    def __init__(self, backbone: nnx.Module, min_remaining: float = 0.05):
        if not 0.0 < min_remaining <= 1.0:
            raise ValueError(f"min_remaining must be in (0, 1] (got {min_remaining}); e.g. 0.05.")
        self.backbone = backbone
        self.min_remaining = float(min_remaining)

    def __call__(self, x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None, *, train: bool = False) -> jax.Array:
        x1_hat = self.backbone(x_t, t, d, cond, train=train)
        remaining = jnp.maximum(1.0 - jnp.asarray(t, jnp.float32), self.min_remaining)
        remaining = remaining.reshape(remaining.shape + (1,) * (x_t.ndim - remaining.ndim))
        return (x1_hat - x_t.astype(x1_hat.dtype)) / remaining


def with_prediction(backbone: nnx.Module, prediction: str = "velocity", min_remaining: float = 0.05) -> nnx.Module:
    """The backbone as a velocity network, given what its output predicts."""
    if prediction == "velocity":
        return backbone
    if prediction == "data":
        return DataPrediction(backbone, min_remaining)
    raise ValueError(f"Unknown model.prediction '{prediction}'. Accepted: {', '.join(PREDICTIONS)}.")
