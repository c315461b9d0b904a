"""The exact case the objective tests share: Gaussian data N(MU, diag(SIGMA^2)) and its oracle."""

import jax
import jax.numpy as jnp

from domains.toy import gaussian

MU = jnp.array([1.5, -0.5, 0.3])
SIGMA = jnp.array([0.5, 1.2, 0.05])
ORACLE = gaussian.oracle_model(MU, SIGMA)
# Point-mass data: each noise-data pair's straight line is the ODE trajectory itself.
POINT = gaussian.oracle_model(MU, jnp.zeros(3))


def batch(key, n, sigma=SIGMA):
    return {"x": MU + sigma * jax.random.normal(key, (n, 3)), "cond": None}
