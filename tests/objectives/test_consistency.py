"""Consistency training and distillation: exact fixed points with Gaussian oracles, schedule, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.toy import gaussian
from shortcutlib.objectives import consistency
from shortcutlib.objectives.base import weighted_mse
from shortcutlib.sampling import euler_sample
from tests.objectives.gaussian_case import (
    MU,
    ORACLE,
    POINT,
    SIGMA,
    assert_target_is_stop_gradient,
    batch,
)


def test_consistency_function_of_oracle_is_the_flow_map():
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    t = jnp.linspace(0.0, 0.9, 64)
    f = consistency.consistency_fn(ORACLE, x, t, None)
    np.testing.assert_allclose(f, gaussian.flow_map(x, t, jnp.ones(64), MU, SIGMA), rtol=1e-5, atol=1e-5)
    # Boundary condition at t = 1 whatever the model returns.
    nan_model = lambda x, t, d, c: jnp.full_like(x, jnp.nan)  # noqa: E731
    np.testing.assert_array_equal(consistency.consistency_fn(nan_model, x, jnp.ones(64), None), x)


@pytest.mark.parametrize("mode", ["training", "distillation"])
def test_loss_is_zero_at_the_exact_consistency_function(mode):
    """Point-mass data: the straight pair is the ODE path and Euler on it is exact, so the
    exact model's CT and CD targets equal its prediction (the fixed point, loss 0)."""
    cfg = consistency.Config(mode=mode, schedule="constant", s1=8, teacher_solver="euler")
    tg = consistency.Consistency(cfg).targets(jax.random.PRNGKey(1), batch(jax.random.PRNGKey(2), 256, 0.0), POINT, POINT, teacher=POINT)
    pred = POINT(tg.x_t, tg.t, tg.d, None)
    np.testing.assert_allclose(tg.d, 1.0 - tg.t)
    np.testing.assert_allclose(tg.v_target, pred, rtol=1e-4, atol=1e-4)
    assert float(weighted_mse(pred, tg)) < 1e-9
    # Targets from one step nearer the data: t' = t + 1/8 reached, t on the grid.
    np.testing.assert_allclose(np.round(np.asarray(tg.t) * 8), np.asarray(tg.t) * 8, atol=1e-5)


def test_distillation_target_converges_to_oracle_on_gaussian():
    """Gaussian data: the Heun teacher step is not exact, its error shrinks as N^-3 per step."""
    errs = []
    for n in (16, 32):
        cfg = consistency.Config(mode="distillation", schedule="constant", s1=n, teacher_solver="heun")
        tg = consistency.Consistency(cfg).targets(jax.random.PRNGKey(3), batch(jax.random.PRNGKey(4), 512), ORACLE, ORACLE, teacher=ORACLE)
        resid = (tg.v_target - ORACLE(tg.x_t, tg.t, tg.d, None)) * (1 - tg.t)[:, None]  # error in f
        errs.append(float(jnp.abs(resid).max()))
    assert errs[0] < 0.05
    assert errs[1] < errs[0] / 4


def test_training_target_is_unbiased_on_gaussian():
    """CT's target uses the same pair, not the ODE: unbiased only in expectation given x_t."""
    cfg = consistency.Config(schedule="constant", s1=1000)
    tg = consistency.Consistency(cfg).targets(jax.random.PRNGKey(5), batch(jax.random.PRNGKey(6), 100_000), ORACLE, ORACLE)
    keep = np.asarray(tg.t) < 0.9
    resid = np.asarray(tg.v_target - ORACLE(tg.x_t, tg.t, tg.d, None))[keep]
    assert np.abs(resid).std() > 1e-3  # per-sample noise exists...
    features = np.concatenate([np.ones((keep.sum(), 1)), np.asarray(tg.x_t)[keep]], axis=1)
    coef = np.linalg.lstsq(features, resid, rcond=None)[0]
    assert np.abs(coef).max() < 2e-3  # ...but no bias explained by x_t


def test_doubling_schedule():
    cfg = consistency.Config(s0=10, s1=80)
    got = [int(consistency.num_intervals(k, cfg, 400)) for k in (0, 99, 100, 250, 399, 10_000)]  # 4 stages of 100 steps
    assert got == [10, 10, 20, 40, 80, 80]
    assert int(consistency.num_intervals(5, consistency.Config(schedule="constant", s1=7), 0)) == 7
    with pytest.raises(ValueError, match="training steps"):
        consistency.num_intervals(0, consistency.Config(), 0)


def test_weights_and_target_network():
    live = lambda x, t, d, c: jnp.ones_like(x)  # noqa: E731
    ema = lambda x, t, d, c: 2 * jnp.ones_like(x)  # noqa: E731
    b = batch(jax.random.PRNGKey(0), 32)
    for use_ema, model in ((True, ema), (False, live)):
        cfg = consistency.Config(schedule="constant", s1=4, target_ema=use_ema, weighting="consistency")
        tg = consistency.Consistency(cfg).targets(jax.random.PRNGKey(0), b, live, ema)
        t, tn = np.asarray(tg.t), np.asarray(tg.t) + 0.25
        x0 = (np.asarray(tg.x_t) - t[:, None] * np.asarray(b["x"])) / (1 - t[:, None])
        x_next = (1 - tn[:, None]) * x0 + tn[:, None] * np.asarray(b["x"])
        v = 2.0 if use_ema else 1.0
        f_next = np.where(tn[:, None] >= 1, x_next, x_next + (1 - tn[:, None]) * v)
        np.testing.assert_allclose(tg.v_target, (f_next - np.asarray(tg.x_t)) / (1 - t[:, None]), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(tg.weight, (1 - t) ** 2, rtol=1e-6)
    tg = consistency.Consistency(consistency.Config(schedule="constant", s1=4)).targets(jax.random.PRNGKey(0), b, live, ema)
    np.testing.assert_array_equal(tg.weight, 1.0)  # default: unit weight on F, 1 / (1 - t)^2 on f


def test_gradient_flows_only_through_the_prediction():
    def model_of(w):
        return lambda x, t, d, c: w * x + t[:, None]

    cfg = consistency.Config(schedule="constant", s1=4)
    b = batch(jax.random.PRNGKey(0), 16)
    assert_target_is_stop_gradient(
        lambda m: consistency.Consistency(cfg).targets(jax.random.PRNGKey(1), b, m, m), model_of, jnp.array(0.7), min_grad=1e-3
    )


def test_euler_with_its_query_sizes_is_multistep_consistency_sampling():
    """Euler with d = 1 - t == predict x1 with f, re-noise with the implied noise; one step is f."""
    model = lambda x, t, d, c: jnp.sin(x) * (1 + t[:, None]) + d[:, None]  # noqa: E731
    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    objective = consistency.Consistency()
    np.testing.assert_allclose(
        euler_sample(model, x0, objective.sample_plan(1)), consistency.consistency_fn(model, x0, jnp.zeros(8), None), rtol=1e-6
    )
    x, n = x0, 4
    for i in range(n):
        t, u = jnp.full((8,), i / n), jnp.full((8,), (i + 1) / n)
        x1_hat = consistency.consistency_fn(model, x, t, None)
        z_hat = (x - t[:, None] * x1_hat) / (1 - t[:, None])
        x = (1 - u[:, None]) * z_hat + u[:, None] * x1_hat
    np.testing.assert_allclose(euler_sample(model, x0, objective.sample_plan(n)), x, rtol=1e-5, atol=1e-5)


def test_distillation_requires_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        consistency.Consistency(consistency.Config(mode="distillation", schedule="constant")).targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0), 4), ORACLE, ORACLE)
