"""MeanFlow: the average-velocity identity, exact on Gaussian oracles."""

import jax
import jax.numpy as jnp
import numpy as np

from domains.toy import gaussian
from shortcutlib.objectives import common, meanflow
from shortcutlib.objectives.shortcut import Shortcut
from shortcutlib.sampling import euler_sample
from tests.objectives.gaussian_case import MU, ORACLE, POINT, SIGMA, batch, assert_target_is_stop_gradient


def test_identity_holds_for_the_exact_average_velocity():
    """u = v + d (du/dz v + du/dt - du/dd) with the exact instantaneous v, at every (t, d)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    z = jax.random.normal(k1, (128, 3))
    t = jax.random.uniform(k2, (128,)) * 0.8
    d = jax.random.uniform(k3, (128,)) * (1 - t)
    v = gaussian.velocity(z, t, MU, SIGMA)
    pred, target = meanflow.meanflow_target(ORACLE, z, t, d, v, None)
    np.testing.assert_allclose(pred, ORACLE(z, t, d, None))
    np.testing.assert_allclose(target, pred, rtol=2e-4, atol=2e-4)
    # A wrong model (the instantaneous velocity used for every d) violates it.
    inst = lambda z, t, d, c: gaussian.velocity(z, t, MU, SIGMA)  # noqa: E731
    _, wrong = meanflow.meanflow_target(inst, z, t, d, v, None)
    assert float(jnp.abs(wrong - inst(z, t, d, None)).max()) > 0.1


def test_loss_is_zero_at_the_exact_model_for_point_mass_data():
    """Point-mass data: the conditional velocity x1 - x0 is the exact velocity, so targets equal predictions."""
    cfg = meanflow.Config(mean_fraction=0.5, adaptive_p=0.0)
    tg = meanflow.MeanFlow(cfg).targets(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(2), 256, 0.0), POINT, POINT)
    d = np.asarray(tg.d)
    assert np.all(d[:128] > 0) and np.all(d[128:] == 0)
    assert np.all(np.asarray(tg.t) + d <= 1 + 1e-6)
    keep = np.asarray(tg.t) + d < 0.99  # the point-mass field is singular at t = 1
    pred = POINT(tg.x_t, tg.t, tg.d, None)
    np.testing.assert_allclose(np.asarray(tg.v_target)[keep], np.asarray(pred)[keep], rtol=1e-3, atol=1e-3)


def test_target_is_unbiased_on_gaussian():
    """With x1 - x0 in place of v the target is linear in it, so E[target | z_t] = u."""
    cfg = meanflow.Config(mean_fraction=1.0, adaptive_p=0.0)
    tg = meanflow.MeanFlow(cfg).targets(jax.random.PRNGKey(3), batch(jax.random.PRNGKey(4), 50_000), ORACLE, ORACLE)
    keep = np.asarray(tg.t + tg.d) < 0.9
    resid = np.asarray(tg.v_target - ORACLE(tg.x_t, tg.t, tg.d, None))[keep]
    features = np.concatenate([np.ones((keep.sum(), 1)), np.asarray(tg.x_t)[keep]], axis=1)
    coef = np.linalg.lstsq(features, resid, rcond=None)[0]
    assert np.abs(coef).max() < 0.03


def test_one_step_sample_of_exact_model_is_the_flow_map():
    x0 = jax.random.normal(jax.random.PRNGKey(5), (64, 3))
    exact = gaussian.flow_map(x0, jnp.zeros(64), jnp.ones(64), MU, SIGMA)
    np.testing.assert_allclose(euler_sample(ORACLE, x0, Shortcut().sample_plan(1)), exact, rtol=1e-4, atol=1e-4)


def test_adaptive_weights():
    zero = lambda x, t, d, c: jnp.zeros_like(x)  # noqa: E731
    cfg = meanflow.Config(mean_fraction=0.5, adaptive_p=1.0, adaptive_c=1e-3)
    tg = meanflow.MeanFlow(cfg).targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 32), zero, zero)
    err = np.mean(np.square(np.asarray(tg.v_target)), axis=1)
    np.testing.assert_allclose(tg.weight, 1.0 / (err + 1e-3), rtol=1e-5)


def test_gradient_flows_only_through_the_prediction():
    def model_of(w):
        return lambda x, t, d, c: w * x * (1 + t[:, None]) + d[:, None]

    b = batch(jax.random.PRNGKey(0), 16)
    cfg = meanflow.Config(mean_fraction=0.5)
    assert_target_is_stop_gradient(
        lambda m: meanflow.MeanFlow(cfg).targets(jax.random.PRNGKey(1), b, m, m), model_of, jnp.array(0.5), min_grad=1e-4
    )


def test_logit_normal_times_keep_pairs_consistent():
    cfg = meanflow.Config(mean_fraction=0.5, t_sampling="logit_normal", adaptive_p=0.0)
    b = batch(jax.random.PRNGKey(0), 64)
    tg = meanflow.MeanFlow(cfg).targets(jax.random.PRNGKey(1), b, ORACLE, ORACLE)
    x0 = b["x"] - tg.v_target  # flow-matching rows: v = x1 - x0
    np.testing.assert_allclose(tg.x_t[32:], common.interpolate(x0[32:], b["x"][32:], tg.t[32:]), rtol=1e-5, atol=1e-5)
