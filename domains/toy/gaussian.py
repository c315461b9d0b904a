"""Exact flows for Gaussian data N(mu, diag(sigma^2)) under the straight noise-to-data path.

With x_t = (1 - t) x_0 + t x_1, the marginal is N(t mu, diag(s_t^2)) with
s_t^2 = (1 - t)^2 + t^2 sigma^2, and the deterministic flow transports quantiles:
    x_u = u mu + (s_u / s_t) (x_t - t mu).
So the instantaneous velocity, the flow map and the exact shortcut are closed-form:
    v(x, t)     = mu + (t sigma^2 - (1 - t)) / s_t^2 * (x - t mu)
    s(x, t, d)  = (flow(x, t, t + d) - x) / d,   s(x, t, 0) = v(x, t).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def marginal_std(t: jax.Array, sigma: jax.Array) -> jax.Array:
    return jnp.sqrt((1.0 - t) ** 2 + t**2 * sigma**2)


def velocity(x: jax.Array, t: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
    t = t.reshape(t.shape + (1,) * (x.ndim - t.ndim))
    return mu + (t * sigma**2 - (1.0 - t)) / ((1.0 - t) ** 2 + t**2 * sigma**2) * (x - t * mu)


def flow_map(x: jax.Array, t: jax.Array, u: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """Where the ODE started at x at time t is at time u."""
    t = t.reshape(t.shape + (1,) * (x.ndim - t.ndim))
    u = u.reshape(u.shape + (1,) * (x.ndim - u.ndim))
    return u * mu + marginal_std(u, sigma) / marginal_std(t, sigma) * (x - t * mu)


def shortcut(x: jax.Array, t: jax.Array, d: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
    """The exact average velocity over [t, t + d]; the instantaneous velocity at d = 0."""
    db = d.reshape(d.shape + (1,) * (x.ndim - d.ndim))
    safe = jnp.where(db > 0, db, 1.0)
    jump = (flow_map(x, t, t + d, mu, sigma) - x) / safe
    return jnp.where(db > 0, jump, velocity(x, t, mu, sigma))


def oracle_model(mu: jax.Array, sigma: jax.Array):
    """A perfect shortcut model for this Gaussian, with the backbone call signature."""

    def model(x: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None) -> jax.Array:
        return shortcut(x, t, d, mu, sigma)

    return model
