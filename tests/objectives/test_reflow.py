"""Reflow: straight-line targets between noise and the model's own samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.toy import gaussian
from shortcutlib.objectives import reflow
from shortcutlib.objectives.base import ObjectiveContext, weighted_mse
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.sampling import euler_sample
from tests.objectives.gaussian_case import (
    MU,
    ORACLE,
    SIGMA,
    assert_target_is_stop_gradient,
    batch,
)


def noise_of(tg):
    """x_0 from a straight-path example: x_t - t * v = x_0."""
    return tg.x_t - tg.t[:, None] * tg.v_target


def test_live_reflow_pairs_come_from_the_generator_and_rest_is_flow_matching():
    cfg = reflow.Config(reflow_fraction=0.25, generate_steps=4, M=8)
    b = batch(jax.random.PRNGKey(0), 64)
    tg = reflow.Reflow(cfg).targets(jax.random.PRNGKey(1), b, ORACLE, ORACLE)
    re = slice(0, 16)
    x0 = noise_of(tg)[re]
    x1_hat = x0 + tg.v_target[re]
    np.testing.assert_allclose(x1_hat, euler_sample(ORACLE, x0, FlowMatching().sample_plan(4)), rtol=1e-4, atol=1e-4)
    # Pairs are taught at every size 1/8 ... 1 on the straight line; the rest is flow matching at d = 0.
    np.testing.assert_allclose(np.sort(np.unique(np.asarray(tg.d)[re])), 2.0 ** -np.arange(3, -1, -1))
    assert np.all(np.asarray(tg.t)[re] + np.asarray(tg.d)[re] <= 1 + 1e-6)
    np.testing.assert_array_equal(np.asarray(tg.d)[16:], 0.0)
    np.testing.assert_allclose(tg.x_t[16:] + (1 - tg.t[16:, None]) * tg.v_target[16:], b["x"][16:], rtol=1e-4, atol=1e-4)


def test_exact_straight_flow_is_the_fixed_point():
    """Gaussian data with diagonal covariance: the exact flow map x1 = MU + SIGMA * x0 is affine,
    so a point on the straight line x_t = (1 - t) x0 + t x1 determines its x0, and the model that
    follows straight lines to the exact map is reflow's fixed point: its own samples (drawn with
    fine Euler steps) give targets equal to its predictions."""
    flow = lambda x0: gaussian.flow_map(x0, jnp.zeros(len(x0)), jnp.ones(len(x0)), MU, SIGMA)  # noqa: E731

    def straight(x, t, d, c):
        tb = t[:, None]
        x0 = (x - tb * MU) / (1 - tb + tb * SIGMA)
        return flow(x0) - x0

    cfg = reflow.Config(reflow_fraction=1.0, generate_steps=512, generate_ema=False, M=8)
    tg = reflow.Reflow(cfg).targets(jax.random.PRNGKey(2), batch(jax.random.PRNGKey(3), 256), straight, straight)
    pred = straight(tg.x_t, tg.t, tg.d, None)
    np.testing.assert_allclose(tg.v_target, pred, rtol=1e-4, atol=1e-4)
    assert float(weighted_mse(pred, tg)) < 1e-8


def test_pairs_mode_uses_the_stored_noise():
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
    x1 = x0 * 2 + 1
    cond = reflow.pack_pairs(x0, None)
    tg = reflow.Reflow(reflow.Config(mode="pairs", M=4)).targets(jax.random.PRNGKey(1), {"x": x1, "cond": cond}, ORACLE, ORACLE)
    np.testing.assert_allclose(tg.v_target, x1 - x0, rtol=1e-6)
    np.testing.assert_allclose(noise_of(tg), x0, rtol=1e-5, atol=1e-5)
    assert tg.cond is None
    with pytest.raises(ValueError, match="pairs"):
        reflow.Reflow(reflow.Config(mode="pairs")).targets(jax.random.PRNGKey(1), {"x": x1, "cond": None}, ORACLE, ORACLE)


def test_pairs_mode_drops_labels_to_the_null_token():
    x0 = jnp.zeros((4096, 2))
    labels = jnp.zeros((4096,), jnp.int32)
    cfg = reflow.Config(mode="pairs")
    tg = reflow.Reflow(cfg, ObjectiveContext(num_classes=10, class_dropout=0.2)).targets(jax.random.PRNGKey(0), {"x": x0 + 1, "cond": reflow.pack_pairs(x0, labels)}, ORACLE, ORACLE)
    assert 0.17 < float(jnp.mean(tg.cond == 10)) < 0.23


def test_gradient_flows_only_through_the_prediction():
    def model_of(w):
        return lambda x, t, d, c: w * x + 0.1

    b = batch(jax.random.PRNGKey(0), 16)
    cfg = reflow.Config(reflow_fraction=0.5, generate_steps=2, generate_ema=False)
    assert_target_is_stop_gradient(lambda m: reflow.Reflow(cfg).targets(jax.random.PRNGKey(1), b, m, m), model_of, jnp.array(0.5))
