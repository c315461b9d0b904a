"""Euler sampling over a step budget, classifier-free guidance and noise interpolation."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.common import VelocityFn, guided_velocity


def euler_sample(
    model: VelocityFn,
    x0: jax.Array,
    num_steps: int,
    cond: Any = None,
    *,
    cfg_scale: float = 1.0,
    num_classes: int = 0,
    condition_on_d: bool = True,
    return_trajectory: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Integrate from t = 0 (noise x0) to t = 1 (data) in ``num_steps`` steps of size d = 1/n.

    A shortcut model is queried at its step size d = 1/n; a flow-matching model
    (``condition_on_d=False``) at d = 0, i.e. plain Euler on the instantaneous velocity.
    With ``return_trajectory`` also returns the states after each step, (n + 1, *x0.shape).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    b = x0.shape[0]
    step = 1.0 / num_steps
    d = jnp.full((b,), step if condition_on_d else 0.0, x0.dtype)

    def body(x: jax.Array, i: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = jnp.full((b,), i * step, x0.dtype)
        v = guided_velocity(model, x, t, d, cond, cfg_scale, num_classes)
        x_next = x + step * v
        return x_next, x_next

    x1, path = jax.lax.scan(body, x0, jnp.arange(num_steps, dtype=x0.dtype))
    if return_trajectory:
        return x1, jnp.concatenate([x0[None], path])
    return x1


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
