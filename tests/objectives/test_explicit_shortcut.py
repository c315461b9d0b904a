"""The explicit shortcut objective: the plug-in velocity and the early jumps to the data."""

import jax
import jax.numpy as jnp
import numpy as np

from shortcutlib.objectives import explicit_shortcut as esc
from shortcutlib.objectives.base import ObjectiveContext
from shortcutlib.objectives.common import plug_in_velocity
from tests.objectives.gaussian_case import ORACLE, POINT, batch


def mixture_velocity(z, t, points, weights):
    """The exact marginal velocity of data sum_k weights_k delta(points_k) on the straight path."""
    log_post = -np.sum((z[:, None, :] - t[:, None, None] * points[None]) ** 2, -1) / (2 * (1 - t[:, None]) ** 2) + np.log(weights)
    post = np.exp(log_post - log_post.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    return (post @ points - z) / (1 - t)[:, None]


def test_plug_in_velocity_is_the_marginal_velocity_of_the_batch():
    """The batch is an empirical distribution; the plug-in is its exact marginal velocity."""
    rng = np.random.default_rng(0)
    points = np.array([[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]])
    x1 = points[np.array([0, 0, 1, 2, 2, 2, 1, 0])]
    t = rng.uniform(0.1, 0.9, 8)
    z = (1 - t)[:, None] * rng.normal(size=(8, 2)) + t[:, None] * x1
    weights = np.array([3, 2, 3]) / 8
    got = plug_in_velocity(jnp.asarray(z), jnp.asarray(t), jnp.asarray(x1))
    np.testing.assert_allclose(np.asarray(got), mixture_velocity(z, t, points, weights), rtol=1e-4, atol=1e-4)
    # Class-consistent: each example's posterior only over its own class (here: its own point).
    labels = np.array([0, 0, 1, 2, 2, 2, 1, 0])
    same = jnp.asarray(labels[:, None] == labels[None, :])
    own = plug_in_velocity(jnp.asarray(z), jnp.asarray(t), jnp.asarray(x1), same)
    np.testing.assert_allclose(np.asarray(own), (x1 - z) / (1 - t)[:, None], rtol=1e-4, atol=1e-4)


def test_point_mass_data_make_the_exact_model_a_fixed_point():
    objective = esc.ExplicitShortcut(esc.Config(t_sampling="uniform", mean_fraction=0.5), ObjectiveContext(total_steps=100))
    tg = objective.targets(jax.random.PRNGKey(0), batch(jax.random.PRNGKey(1), 256, 0.0), POINT, POINT, step=100)
    keep = np.asarray(tg.t + tg.d) < 0.99
    np.testing.assert_allclose(np.asarray(objective.predict(POINT, tg))[keep], np.asarray(tg.v_target)[keep], rtol=1e-3, atol=1e-3)


def test_intervals_reach_the_data_early_in_training_only():
    objective = esc.ExplicitShortcut(esc.Config(t_sampling="uniform"), ObjectiveContext(total_steps=1000))  # horizon 20 steps
    b = batch(jax.random.PRNGKey(1), 512)
    first = objective.targets(jax.random.PRNGKey(0), b, ORACLE, ORACLE, step=0)
    late = objective.targets(jax.random.PRNGKey(0), b, ORACLE, ORACLE, step=20)
    mean_rows = np.asarray(first.d) > 0
    np.testing.assert_allclose(np.asarray(first.t + first.d)[mean_rows], 1.0, atol=1e-6)
    ends = np.asarray(late.t + late.d)[np.asarray(late.d) > 0]
    assert np.mean(ends < 0.999) > 0.9
