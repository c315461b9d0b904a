"""One Euler loop over a step budget, and noise interpolation.

Sampling with ``n`` steps integrates from t = 0 (noise) to t = 1 (data) in ``n`` Euler steps of
size ``1/n`` at times ``i/n``. What each step feeds the model, its ``d`` and its guidance scale,
is the objective's business (``Objective.sample_plan``): a model of step sizes is queried at its
step size, a model of the instantaneous velocity at ``d = 0``, a model of the jump to the data at
``d = 1 - t``.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.base import SamplePlan
from shortcutlib.velocity import VelocityFn, guided_velocity


def euler_sample(
    model: VelocityFn,
    x0: jax.Array,
    plan: SamplePlan,
    cond: Any = None,
    *,
    num_classes: int = 0,
    return_trajectory: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """``plan.num_steps`` Euler steps from ``x0``; with ``return_trajectory`` also the states after
    each step, (n + 1, *x0.shape). Steps that share a guidance scale run as one ``lax.scan``."""
    n = plan.num_steps
    b = x0.shape[0]
    step = 1.0 / n
    x, path, first = x0, [x0[None]], 0
    for scale, run in itertools.groupby(plan.cfg_scale):
        count = len(list(run))
        index = jnp.arange(first, first + count, dtype=x0.dtype)
        sizes = jnp.asarray(plan.d[first : first + count], x0.dtype)

        def body(x: jax.Array, inputs: tuple[jax.Array, jax.Array], scale: float = scale) -> tuple[jax.Array, jax.Array]:
            i, d = inputs
            t = jnp.full((b,), i * step, x0.dtype)
            v = guided_velocity(model, x, t, jnp.full((b,), d, x0.dtype), cond, scale, num_classes)
            x_next = x + step * v
            return x_next, x_next

        x, states = jax.lax.scan(body, x, (index, sizes))
        path.append(states)
        first += count
    if return_trajectory:
        return x, jnp.concatenate(path)
    return x


def slerp(z0: jax.Array, z1: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Spherical interpolation between two noise draws, per example.

    Keeps the norm statistics of Gaussian noise, unlike linear interpolation whose
    midpoint has too small a norm and decodes to blurry samples.
    """
    flat0 = z0.reshape(z0.shape[0], -1) if z0.ndim > 1 else z0[None]
    flat1 = z1.reshape(flat0.shape)
    cos = jnp.sum(flat0 * flat1, -1) / (jnp.linalg.norm(flat0, axis=-1) * jnp.linalg.norm(flat1, axis=-1))
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]
    so = jnp.sin(omega)
    alpha = jnp.asarray(alpha, z0.dtype)
    w0 = jnp.where(so > 1e-6, jnp.sin((1 - alpha) * omega) / jnp.where(so > 1e-6, so, 1.0), 1 - alpha)
    w1 = jnp.where(so > 1e-6, jnp.sin(alpha * omega) / jnp.where(so > 1e-6, so, 1.0), alpha)
    return (w0 * flat0 + w1 * flat1).reshape(z0.shape)


def interpolation_noise(key: jax.Array, shape: tuple[int, ...], num: int) -> jax.Array:
    """``num`` noise draws on the great circle between two seeds, (num, *shape)."""
    k0, k1 = jax.random.split(key)
    z0 = jax.random.normal(k0, (1, *shape))
    z1 = jax.random.normal(k1, (1, *shape))
    alphas = jnp.linspace(0.0, 1.0, num)
    return jax.vmap(lambda a: slerp(z0, z1, a)[0])(alphas)
