from functools import lru_cache

import jax
import numpy as np
import pytest

from shortcutlib.inference import make_sample_fn
from shortcutlib.run import build_domain
from shortcutlib.train.loop import build_run
from tests.utils import TINY_TOY, make_cfg


@lru_cache(maxsize=None)
def perturbed_sample_fn(objective: str):
    """The sample_fn of a randomly perturbed tiny toy model (a zero-initialised head would be the identity map)."""
    cfg = make_cfg(TINY_TOY + [f"objective={objective}"])
    domain = build_domain(cfg)
    run = build_run(cfg, domain)
    leaves, tree = jax.tree.flatten(run.state.params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    return make_sample_fn(run.graphdef, params, run.objective, domain.sample_shape), tuple(domain.sample_shape)


@pytest.mark.parametrize("num_steps", [1, 4])
def test_noise_scale_scales_the_initial_draw(num_steps):
    sample_fn, shape = perturbed_sample_fn("shortcut")
    key = jax.random.key(0)
    draw = jax.random.normal(key, (16, *shape))
    for scale in (0.0, 0.5):
        scaled = np.asarray(sample_fn(key, num_steps, 16, noise_scale=scale))
        explicit = np.asarray(sample_fn(key, num_steps, 16, noise=scale * draw))
        np.testing.assert_allclose(scaled, explicit, atol=1e-6)
    plain = np.asarray(sample_fn(key, num_steps, 16))
    np.testing.assert_allclose(plain, np.asarray(sample_fn(key, num_steps, 16, noise=draw)), atol=1e-6)
    # Scale 0 is deterministic: every key gives the same samples, and they differ from sampling.
    zero = np.asarray(sample_fn(jax.random.key(9), num_steps, 16, noise_scale=0.0))
    np.testing.assert_allclose(zero, np.asarray(sample_fn(key, num_steps, 16, noise_scale=0.0)), atol=1e-6)
    assert np.abs(zero - plain).max() > 0.1


def test_noise_scale_is_ignored_by_objectives_that_start_from_zeros():
    sample_fn, _ = perturbed_sample_fn("bc")
    key = jax.random.key(0)
    np.testing.assert_allclose(sample_fn(key, 1, 8, noise_scale=0.3), sample_fn(key, 1, 8), atol=1e-6)


def test_negative_noise_scale_is_refused():
    sample_fn, _ = perturbed_sample_fn("shortcut")
    with pytest.raises(ValueError, match="noise_scale must be >= 0"):
        sample_fn(jax.random.key(0), 1, 4, noise_scale=-1.0)
