"""MeanFlow: the average-velocity identity, its compound prediction, exact on Gaussian oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.toy import gaussian
from shortcutlib.objectives import meanflow
from shortcutlib.objectives.base import ObjectiveContext
from shortcutlib.objectives.shortcut import Shortcut
from shortcutlib.sampling import euler_sample
from tests.objectives.gaussian_case import MU, ORACLE, POINT, SIGMA, batch


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


def test_intervals_and_loss_zero_at_the_exact_model_for_point_mass_data():
    """Point-mass data: x1 - x0 is the exact velocity, so the exact model's compound prediction
    equals the regressed velocity and the loss vanishes."""
    objective = meanflow.MeanFlow(meanflow.Config(mean_fraction=0.5, t_sampling="uniform"))
    tg = objective.targets(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(2), 256, 0.0), POINT, POINT)
    d = np.asarray(tg.d)
    assert np.all(d[:128] > 0) and np.all(d[128:] == 0)
    assert np.all(np.asarray(tg.t) + d <= 1 + 1e-6)
    keep = np.asarray(tg.t) + d < 0.99  # the point-mass field is singular at t = 1
    pred = objective.predict(POINT, tg)
    np.testing.assert_allclose(np.asarray(pred)[keep], np.asarray(tg.v_target)[keep], rtol=1e-3, atol=1e-3)


def test_compound_prediction_is_unbiased_on_gaussian():
    """The compound prediction is linear in the tangent x1 - x0, so its mean given z_t is the
    exact velocity: the exact model's residual is uncorrelated with z_t."""
    objective = meanflow.MeanFlow(meanflow.Config(mean_fraction=1.0, t_sampling="uniform"))
    tg = objective.targets(jax.random.PRNGKey(3), batch(jax.random.PRNGKey(4), 50_000), ORACLE, ORACLE)
    keep = np.asarray(tg.t + tg.d) < 0.9
    pred = objective.predict(ORACLE, tg)
    resid = np.asarray(pred - gaussian.velocity(tg.x_t, tg.t, MU, SIGMA))[keep]
    assert np.abs(resid).std() > 1e-2  # the conditional velocity's noise...
    features = np.concatenate([np.ones((keep.sum(), 1)), np.asarray(tg.x_t)[keep]], axis=1)
    coef = np.linalg.lstsq(features, resid, rcond=None)[0]
    assert np.abs(coef).max() < 0.03  # ...averages out


def test_compound_loss_has_the_gradient_of_the_stop_gradient_target_loss():
    """|u - d sg(du/dt) - v|^2 and |u - sg(v + d du/dt)|^2 are equal in value and gradient."""

    def model_of(w):
        return lambda x, t, d, c: w * x * (1 + t[:, None]) + jnp.sin(w * d)[:, None]

    objective = meanflow.MeanFlow(meanflow.Config(mean_fraction=0.5, adaptive_p=0.0))
    tg = objective.targets(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(0), 16), model_of(0.5), model_of(0.5))

    def compound(w):
        return objective.loss(model_of(w), tg)

    def paper(w):
        model = model_of(w)
        pred, target = meanflow.meanflow_target(model, tg.x_t, tg.t, tg.d, tg.v_target, None)
        return jnp.square(pred - jax.lax.stop_gradient(target)).sum(axis=1).mean()

    w = jnp.array(0.7)
    np.testing.assert_allclose(compound(w), paper(w), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(compound)(w), jax.grad(paper)(w), rtol=1e-4)
    assert abs(float(jax.grad(compound)(w))) > 1e-3


def test_adaptive_weight_follows_the_formula():
    pred, target = jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.zeros((2, 2))
    err = np.array([5.0, 0.0])
    np.testing.assert_allclose(meanflow.adaptive_loss(pred, target, 1.0, 0.01), np.mean(err / (err + 0.01)), rtol=1e-6)
    np.testing.assert_allclose(meanflow.adaptive_loss(pred, target, 0.0, 0.01), err.mean(), rtol=1e-6)
    # The weight is stop-gradient: with p = 1 the gradient is that of err scaled by 1 / (err + c).
    g = jax.grad(lambda p: meanflow.adaptive_loss(p, target, 1.0, 0.01))(pred)
    np.testing.assert_allclose(g[0], 2 * pred[0] / (5.0 + 0.01) / 2, rtol=1e-5)


def test_logit_normal_times_lean_towards_the_data():
    objective = meanflow.MeanFlow()  # paper defaults
    tg = objective.targets(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(0), 4096), ORACLE, ORACLE)
    t = np.asarray(tg.t)[np.asarray(tg.d) == 0]
    assert np.median(t) > 0.55  # sigmoid(N(0.4, 1)): median sigmoid(0.4) = 0.6
    assert np.mean(np.asarray(tg.d) > 0) == pytest.approx(0.25, abs=0.01)


def test_baked_guidance_mixes_the_model_velocities_and_sampling_adds_none():
    """omega (x1 - x0) + kappa v_c + (1 - omega - kappa) v_u for labelled examples inside the
    interval; the effective scale omega / (1 - kappa) is not applied again at sampling."""

    def model(x, t, d, c):
        return jnp.where((c == 10)[:, None], 1.0, 3.0) * jnp.ones_like(x)  # v_u = 1, v_c = 3

    cfg = meanflow.Config(t_sampling="uniform", guidance_omega=1.0, guidance_kappa=0.5, guidance_interval=[0.0, 0.5])
    objective = meanflow.MeanFlow(cfg, ObjectiveContext(num_classes=10))
    x1 = jnp.zeros((512, 3))
    tg = objective.targets(jax.random.PRNGKey(0), {"x": x1, "cond": jnp.zeros((512,), jnp.int32)}, model, model)
    x0 = np.asarray(tg.x_t) / (1 - np.asarray(tg.t))[:, None]  # x1 = 0: x_t = (1 - t) x0
    v = -x0
    inside = np.asarray(tg.t) <= 0.5
    np.testing.assert_allclose(np.asarray(tg.v_target)[inside], (v + 0.5 * 3.0 - 0.5 * 1.0)[inside], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(tg.v_target)[~inside], v[~inside], rtol=1e-4, atol=1e-4)
    assert objective.baked_guidance == 2.0
    assert objective.sample_plan(4, cfg_scale=2.0).cfg_scale == (1.0,) * 4


def test_one_step_sample_of_exact_model_is_the_flow_map():
    x0 = jax.random.normal(jax.random.PRNGKey(5), (64, 3))
    exact = gaussian.flow_map(x0, jnp.zeros(64), jnp.ones(64), MU, SIGMA)
    plan = meanflow.MeanFlow().sample_plan(1)
    np.testing.assert_allclose(euler_sample(ORACLE, x0, plan), exact, rtol=1e-4, atol=1e-4)
    assert plan == Shortcut().sample_plan(1)


def test_the_backbone_it_trains_embeds_t_and_d_smoothly():
    from flax import nnx

    from shortcutlib.nn.mlp import ResidualMLP

    backbone = ResidualMLP(data_shape=(2,), hidden=16, depth=1, rngs=nnx.Rngs(0))
    assert backbone.cond_embedder.t_embedder.scale == 1000.0
    adapted = meanflow.MeanFlow().adapt_backbone(backbone, nnx.Rngs(1))
    assert adapted.cond_embedder.t_embedder.scale == adapted.cond_embedder.d_embedder.scale == 10.0
    kept = meanflow.MeanFlow(meanflow.Config(embedding_scale=None)).adapt_backbone(ResidualMLP(data_shape=(2,), hidden=16, depth=1, rngs=nnx.Rngs(0)), nnx.Rngs(1))
    assert kept.cond_embedder.t_embedder.scale == 1000.0
