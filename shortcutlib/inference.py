"""Turn trained parameters into the SampleFn that domains evaluate and visualise with."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.domain import SampleFn
from shortcutlib.objectives.base import Objective, SamplePlan
from shortcutlib.sampling import euler_sample
from shortcutlib.velocity import bind


def make_sample_fn(
    graphdef: nnx.GraphDef,
    params: Any,
    objective: Objective,
    sample_shape: tuple[int, ...],
    *,
    cfg_scale: float = 1.0,
    num_classes: int = 0,
) -> SampleFn:
    """``sample_fn(key, num_steps, num_samples, cond=None, noise=None, noise_scale=1.0)`` in model space.

    Jitted once per (budget, batch size). The objective decides what each Euler step queries and
    where guidance applies (``Objective.sample_plan``). ``noise`` (num_samples, *sample_shape)
    replaces the initial draw, e.g. for interpolation strips; otherwise the draw is
    ``noise_scale`` times standard normal noise (a temperature: 0 starts from the noise mean).
    Objectives that start from zeros (MSE behaviour cloning) ignore ``noise_scale``.
    """
    from_noise = objective.starts_from_noise

    @partial(jax.jit, static_argnums=(2, 3))
    def sample(params: Any, key: jax.Array, plan: SamplePlan, num_samples: int, cond: Any, noise: Any, noise_scale: jax.Array) -> jax.Array:
        shape = (num_samples, *sample_shape)
        if noise is not None:
            x0 = noise
        else:
            x0 = noise_scale * jax.random.normal(key, shape) if from_noise else jnp.zeros(shape)
        return euler_sample(bind(graphdef, params), x0, plan, objective.sampling_cond(cond, cfg_scale), num_classes=num_classes)

    plans: dict[int, SamplePlan] = {}

    def sample_fn(
        key: jax.Array, num_steps: int, num_samples: int, cond: Any = None, noise: Any = None, noise_scale: float = 1.0
    ) -> jax.Array:
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0 (got {noise_scale}); 1 samples the model, 0 is deterministic.")
        n = int(num_steps)
        if n not in plans:
            plans[n] = objective.sample_plan(n, cfg_scale)
        return sample(params, key, plans[n], int(num_samples), cond, noise, jnp.float32(noise_scale))

    return sample_fn
