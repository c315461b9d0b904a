import jax
import jax.numpy as jnp
import numpy as np

from shortcutlib.objectives.base import SamplePlan
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.objectives.shortcut import Shortcut
from shortcutlib.sampling import euler_sample, interpolation_noise, slerp
from shortcutlib.velocity import guided_velocity


def test_euler_steps_and_trajectory():
    # v = 1 everywhere: x1 = x0 + 1 for any budget; trajectory has n + 1 states.
    model = lambda x, t, d, c: jnp.ones_like(x)  # noqa: E731
    x0 = jnp.zeros((3, 2))
    x1, traj = euler_sample(model, x0, Shortcut().sample_plan(4), return_trajectory=True)
    np.testing.assert_allclose(x1, 1.0)
    assert traj.shape == (5, 3, 2)
    np.testing.assert_allclose(traj[:, 0, 0], [0, 0.25, 0.5, 0.75, 1.0])


def test_sampler_feeds_t_and_d():
    seen = []

    def model(x, t, d, c):
        seen.append(None)
        return jnp.stack([t, d], axis=1)

    x1 = euler_sample(model, jnp.zeros((1, 2)), Shortcut().sample_plan(4))
    # sum over steps of d * t_i = 0.25 * (0 + .25 + .5 + .75); sum of d * d = 4 * 0.25^2
    np.testing.assert_allclose(x1[0], [0.375, 0.25], rtol=1e-6)
    x1_fm = euler_sample(model, jnp.zeros((1, 2)), FlowMatching().sample_plan(4))
    np.testing.assert_allclose(x1_fm[0], [0.375, 0.0], atol=1e-7)


def test_steps_of_a_plan_with_mixed_guidance_each_get_their_own():
    """Guidance per step: each step uses its own scale, in order, with its own d."""
    model = lambda x, t, d, c: jnp.where((c == 5)[:, None], 0.0, 1.0) * jnp.ones_like(x) + d[:, None]  # noqa: E731
    plan = SamplePlan(d=(0.0, 0.5, 0.0, 0.25), cfg_scale=(2.0, 1.0, 1.0, 3.0))
    x1, traj = euler_sample(model, jnp.zeros((1, 1)), plan, jnp.array([0]), num_classes=5, return_trajectory=True)
    # guided v = v_u + s (v_c - v_u) = d + s; steps of 1/4
    steps = [(0.0 + 2.0), (0.5 + 1.0), (0.0 + 1.0), (0.25 + 3.0)]
    np.testing.assert_allclose(np.diff(np.asarray(traj)[:, 0, 0]), np.array(steps) / 4, rtol=1e-6)


def test_cfg_combination():
    model = lambda x, t, d, c: jnp.where((c == 5)[:, None], 1.0, 2.0) * jnp.ones_like(x)  # noqa: E731
    x = jnp.zeros((2, 3))
    v = guided_velocity(model, x, jnp.zeros(2), jnp.zeros(2), jnp.array([0, 1]), 3.0, 5)
    np.testing.assert_allclose(v, 1.0 + 3.0 * (2.0 - 1.0))


def test_slerp_endpoints_and_norm():
    k0, k1 = jax.random.split(jax.random.PRNGKey(0))
    z0, z1 = jax.random.normal(k0, (1, 4096)), jax.random.normal(k1, (1, 4096))
    np.testing.assert_allclose(slerp(z0, z1, 0.0), z0, atol=1e-5)
    np.testing.assert_allclose(slerp(z0, z1, 1.0), z1, atol=1e-5)
    mid = slerp(z0, z1, 0.5)
    # Nearly orthogonal high-dimensional noise: slerp keeps the norm, lerp shrinks it by ~sqrt(2).
    assert abs(float(jnp.linalg.norm(mid)) / float(jnp.linalg.norm(z0)) - 1) < 0.05
    strip = interpolation_noise(jax.random.PRNGKey(1), (8, 8, 1), 5)
    assert strip.shape == (5, 8, 8, 1)
