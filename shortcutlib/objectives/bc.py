"""Behaviour cloning by mean squared error: one deterministic step from zeros to the data.

Cast as a one-step velocity so the same sampler and backbones serve it: the model sees
``x_t = 0, t = 0, d = 1`` and regresses ``v = x_1``. It learns E[x_1 | cond] and so
averages the modes of multimodal data: the baseline that generative policies must beat.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.base import Objective, Targets
from shortcutlib.velocity import VelocityFn


class BehaviourCloning(Objective):
    starts_from_noise = False  # the sampler starts from zeros, and one step of size 1 gives the prediction

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        x1 = batch["x"]
        b = x1.shape[0]
        return Targets(
            x_t=jnp.zeros_like(x1),
            t=jnp.zeros((b,), x1.dtype),
            d=jnp.ones((b,), x1.dtype),
            cond=batch.get("cond"),
            v_target=x1,
            weight=jnp.ones((b,), x1.dtype),
        )
