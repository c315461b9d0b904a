"""Improved MeanFlow: exact on the Gaussian oracle, guidance as an input."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from domains.toy import gaussian
from shortcutlib.nn.guidance import GUIDANCE_KEY
from shortcutlib.nn.mlp import ResidualMLP
from shortcutlib.objectives import improved_meanflow as imf
from shortcutlib.objectives.base import ObjectiveContext
from shortcutlib.velocity import bind
from tests.objectives.gaussian_case import MU, ORACLE, SIGMA, batch


def test_compound_prediction_of_the_exact_model_is_the_exact_velocity():
    """Differentiating along the model's own velocity: the exact average velocity gives the exact
    instantaneous velocity at every example, not just in expectation (Gaussian data)."""
    objective = imf.ImprovedMeanFlow(imf.Config(mean_fraction=1.0, t_sampling="uniform"))
    tg = objective.targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 1024), ORACLE, ORACLE)
    keep = np.asarray(tg.t + tg.d) < 0.95
    assert keep.mean() > 0.8 and np.all(np.asarray(tg.d) > 0)
    exact = gaussian.velocity(tg.x_t, tg.t, MU, SIGMA)
    np.testing.assert_allclose(np.asarray(tg.tangent), np.asarray(exact), rtol=1e-5, atol=1e-5)
    pred = objective.predict(ORACLE, tg)
    np.testing.assert_allclose(np.asarray(pred)[keep], np.asarray(exact)[keep], rtol=2e-4, atol=2e-4)
    # MeanFlow's tangent x1 - x0 makes the same prediction noisy per example.
    noisy = objective.predict(ORACLE, tg._replace(tangent=None))
    assert float(jnp.abs(noisy - exact)[keep].max()) > 0.05


def test_half_the_batch_has_intervals():
    objective = imf.ImprovedMeanFlow()
    tg = objective.targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 64), ORACLE, ORACLE)
    assert np.all(np.asarray(tg.d)[:32] > 0) and np.all(np.asarray(tg.d)[32:] == 0)


def test_guidance_scale_is_an_input_of_the_network_and_of_the_target():
    """v~ = x1 - x0 + (1 - 1/omega') (v_c - v_u), omega' = omega inside the interval else 1; the
    network sees (1 - 1/omega, low, high); sampling feeds the requested scale as that input."""
    num_classes = 10
    seen = []

    def model(x, t, d, c):
        seen.append(c)
        g = c[GUIDANCE_KEY]
        # At the fixed point v_c - v_u = omega' (v_cond - v_u); here v_u = 0, v_cond = 1.
        omega = 1.0 / (1.0 - g[:, 0])
        return jnp.where((c["label"] == num_classes)[:, None], 0.0, omega[:, None]) * jnp.ones_like(x)

    objective = imf.ImprovedMeanFlow(imf.Config(t_sampling="uniform"), ObjectiveContext(num_classes=num_classes))
    x1 = jnp.zeros((256, 2))
    tg = objective.targets(jax.random.PRNGKey(0), {"x": x1, "cond": jnp.zeros((256,), jnp.int32)}, model, model)
    g = np.asarray(tg.cond[GUIDANCE_KEY])
    omega, low, high = 1 / (1 - g[:, 0]), g[:, 1], g[:, 2]
    assert omega.min() >= 1.0 - 1e-6 and omega.max() <= 8.0 + 1e-4 and np.median(omega) > 2.0
    d, t = np.asarray(tg.d), np.asarray(tg.t)
    assert np.all(low[d == 0] == 0) and np.all(high[d == 0] == 1)
    assert np.all((low[d > 0] <= 0.5) & (high[d > 0] >= 0.5))
    inside = np.where((t >= low) & (t <= high), omega, 1.0)
    v = -np.asarray(tg.x_t) / (1 - t)[:, None]  # x1 = 0
    np.testing.assert_allclose(np.asarray(tg.v_target), v + ((1 - 1 / inside) * inside)[:, None], rtol=1e-4, atol=1e-4)
    cond = objective.sampling_cond(jnp.array([3, 4]), 2.5)
    np.testing.assert_allclose(cond[GUIDANCE_KEY], [[0.6, 0.0, 1.0]] * 2, rtol=1e-6)
    assert objective.sample_plan(4, 2.5).cfg_scale == (1.0,) * 4


def test_the_backbone_gains_a_guidance_input_only_for_class_conditional_data():
    spec_model = lambda n: ResidualMLP(data_shape=(2,), hidden=16, depth=1, num_classes=n, rngs=nnx.Rngs(0))  # noqa: E731
    plain = imf.ImprovedMeanFlow().adapt_backbone(spec_model(0), nnx.Rngs(1))
    assert not hasattr(plain.cond_embedder, "guidance")
    guided = imf.ImprovedMeanFlow(context=ObjectiveContext(num_classes=5)).adapt_backbone(spec_model(5), nnx.Rngs(1))
    graphdef, params = nnx.split(guided, nnx.Param)
    model = bind(graphdef, params)
    x, t = jnp.zeros((3, 2)), jnp.full((3,), 0.3)
    cond = {"label": jnp.array([0, 1, 5]), GUIDANCE_KEY: jnp.array([[0.0, 0.0, 1.0]] * 3)}
    assert model(x, t, t, cond).shape == (3, 2)
