"""Progressive distillation: two teacher steps per student step, exact with the Gaussian oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.toy import gaussian
from shortcutlib.objectives import progressive
from shortcutlib.objectives.base import weighted_mse
from tests.objectives.gaussian_case import (
    MU,
    ORACLE,
    SIGMA,
    assert_target_is_stop_gradient,
    batch,
)


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_exact_shortcut_is_the_fixed_point(phase):
    """A teacher that is the exact flow over d/2 gives the exact flow over d: target == prediction."""
    cfg = progressive.Config(start_steps=16)
    tg = progressive.ProgressiveDistillation(cfg, phase=phase).targets(jax.random.PRNGKey(phase), batch(jax.random.PRNGKey(0), 256), ORACLE, ORACLE, teacher=ORACLE)
    d = 2.0 ** (phase + 1) / 16
    np.testing.assert_allclose(tg.d, d)
    t = np.asarray(tg.t)
    np.testing.assert_allclose(np.round(t / d) * d, t, atol=1e-6)
    assert t.max() <= 1 - d + 1e-6 and (len(np.unique(t)) > 1 or d == 1.0)
    pred = ORACLE(tg.x_t, tg.t, tg.d, None)
    np.testing.assert_allclose(tg.v_target, pred, rtol=1e-4, atol=1e-4)
    assert float(weighted_mse(pred, tg)) < 1e-9


def test_phase_zero_uses_two_euler_steps_of_the_flow_matching_teacher():
    cfg = progressive.Config(start_steps=8)
    seen_d = []

    def teacher(x, t, d, c):
        seen_d.append(d)
        return ORACLE(x, t, d, c)

    tg = progressive.ProgressiveDistillation(cfg).targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 64), ORACLE, ORACLE, teacher=teacher)
    assert all(float(jnp.abs(d).max()) == 0.0 for d in seen_d)  # instantaneous velocity
    h = 1 / 8
    v1 = gaussian.velocity(tg.x_t, tg.t, MU, SIGMA)
    v2 = gaussian.velocity(tg.x_t + h * v1, tg.t + h, MU, SIGMA)
    np.testing.assert_allclose(tg.v_target, (v1 + v2) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tg.d, 0.25)


def test_later_phases_query_the_teacher_at_half_the_step():
    seen_d = []

    def teacher(x, t, d, c):
        seen_d.append(d)
        return jnp.ones_like(x)

    cfg = progressive.Config(start_steps=8)
    progressive.ProgressiveDistillation(cfg, phase=1).targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 8), ORACLE, ORACLE, teacher=teacher)
    assert len(seen_d) == 2
    np.testing.assert_allclose(seen_d[0], 0.25)


def test_number_of_phases_and_last_step_is_one():
    assert progressive.num_phases(128) == 7
    assert progressive.student_step(128, 6) == 1.0
    with pytest.raises(ValueError, match="power of two"):
        progressive.num_phases(12)
    with pytest.raises(ValueError, match="phase"):
        progressive.student_step(8, 3)


def test_gradient_flows_only_through_the_prediction():
    def model_of(w):
        return lambda x, t, d, c: w * x + d[:, None]

    b = batch(jax.random.PRNGKey(0), 16)
    cfg = progressive.Config(start_steps=8)
    assert_target_is_stop_gradient(
        lambda m: progressive.ProgressiveDistillation(cfg, phase=1).targets(jax.random.PRNGKey(1), b, m, m, teacher=m), model_of, jnp.array(0.5)
    )


def test_needs_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        progressive.ProgressiveDistillation(progressive.Config()).targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(0), 4), ORACLE, ORACLE)
