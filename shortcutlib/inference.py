"""Turn trained parameters into the SampleFn that domains evaluate and visualise with."""

from __future__ import annotations

from functools import partial
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from domains.base import SampleFn
from shortcutlib.objectives import condition_on_d, noise_init
from shortcutlib.sampling import euler_sample
from shortcutlib.train.state import velocity_fn


def make_sample_fn(
    graphdef: nnx.GraphDef,
    params: Any,
    objective: ModuleType,
    sample_shape: tuple[int, ...],
    *,
    cfg_scale: float = 1.0,
    num_classes: int = 0,
) -> SampleFn:
    """``sample_fn(key, num_steps, num_samples, cond=None, noise=None, noise_scale=1.0)`` in model space.

    Jitted per budget. ``noise`` (num_samples, *sample_shape) replaces the initial draw, e.g.
    for interpolation strips; otherwise the draw is ``noise_scale`` times standard normal noise
    (a temperature: 0 starts from the noise mean). Objectives that start from zeros (MSE BC)
    ignore ``noise_scale``.
    """
    query_d = condition_on_d(objective)
    from_noise = noise_init(objective)
    # An objective may remap how the sampler queries its model (consistency models: d = 1 - t).
    sampler_query = getattr(objective, "sampler_query", None)

    @partial(jax.jit, static_argnums=(2, 3))
    def sample(
        params: Any, key: jax.Array, num_steps: int, num_samples: int, cond: Any, noise: Any, noise_scale: jax.Array
    ) -> jax.Array:
        shape = (num_samples, *sample_shape)
        if noise is not None:
            x0 = noise
        else:
            x0 = noise_scale * jax.random.normal(key, shape) if from_noise else jnp.zeros(shape)
        model = velocity_fn(graphdef, params)
        if sampler_query is not None:
            model = sampler_query(model)
        return euler_sample(
            model,
            x0,
            num_steps,
            cond,
            cfg_scale=cfg_scale,
            num_classes=num_classes,
            condition_on_d=query_d,
        )

    def sample_fn(
        key: jax.Array, num_steps: int, num_samples: int, cond: Any = None, noise: Any = None, noise_scale: float = 1.0
    ) -> jax.Array:
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0 (got {noise_scale}); 1 samples the model, 0 is deterministic.")
        return sample(params, key, int(num_steps), int(num_samples), cond, noise, jnp.float32(noise_scale))

    return sample_fn
