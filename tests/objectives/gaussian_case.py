"""What the objective tests share: the exact case (Gaussian data N(MU, diag(SIGMA^2)) and its
oracle) and the check that a target is stop-gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from domains.toy import gaussian
from shortcutlib.objectives.base import weighted_mse

MU = jnp.array([1.5, -0.5, 0.3])
SIGMA = jnp.array([0.5, 1.2, 0.05])
ORACLE = gaussian.oracle_model(MU, SIGMA)
# Point-mass data: each noise-data pair's straight line is the ODE trajectory itself.
POINT = gaussian.oracle_model(MU, jnp.zeros(3))


def batch(key, n, sigma=SIGMA):
    return {"x": MU + sigma * jax.random.normal(key, (n, 3)), "cond": None}


def assert_target_is_stop_gradient(targets_of, model_of, w, min_grad: float | None = None) -> None:
    """``targets_of(model)`` builds Targets with ``model`` in every role (live, EMA, teacher);
    ``model_of(w)`` is a model with one scalar weight. The loss's gradient must equal the gradient
    with the targets held fixed: nothing flows through the target. ``min_grad`` guards against a
    vacuous pass where both gradients vanish."""

    def loss(w):
        model = model_of(w)
        tg = targets_of(model)
        return weighted_mse(model(tg.x_t, tg.t, tg.d, None), tg)

    tg = targets_of(model_of(w))

    def fixed(w):
        return weighted_mse(model_of(w)(tg.x_t, tg.t, tg.d, None), tg)

    grad = jax.grad(loss)(w)
    np.testing.assert_allclose(grad, jax.grad(fixed)(w), rtol=1e-5)
    if min_grad is not None:
        assert abs(float(grad)) > min_grad
