"""model.prediction=data: the backbone outputs the clean sample, the core still sees a velocity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shortcutlib.nn.factory import build_backbone
from shortcutlib.nn.mlp import ResidualMLP
from shortcutlib.nn.prediction import DataPrediction, with_prediction
from shortcutlib.objectives.shortcut import Shortcut
from shortcutlib.sampling import euler_sample
from tests.objectives import gaussian_case


class Constant(nnx.Module):
    """A 'backbone' whose output is a fixed sample, whatever it is asked."""

    def __init__(self, value: jax.Array):
        self.value = nnx.Param(value)

    def __call__(self, x_t, t, d, cond=None, *, train=False):
        return jnp.broadcast_to(self.value[...], x_t.shape)


def test_one_step_sample_is_the_backbone_output():
    """At t = 0, d = 1: x0 + v = x1_hat exactly, so the noise need not be cancelled by the network."""
    target = jnp.array([0.3, -2.0, 5.0])
    model = DataPrediction(Constant(target))
    x0 = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * 3.0
    x1 = euler_sample(lambda x, t, d, c: model(x, t, d, c), x0, Shortcut().sample_plan(1))
    np.testing.assert_allclose(x1, jnp.broadcast_to(target, x1.shape), rtol=1e-5, atol=1e-5)


def test_velocity_formula_and_clip_near_one():
    target = jnp.array([1.0, 2.0])
    model = DataPrediction(Constant(target), min_remaining=0.05)
    x_t = jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, -1.0]])
    t = jnp.array([0.0, 0.5, 1.0])
    v = model(x_t, t, jnp.zeros(3))
    expected = (target - x_t) / jnp.array([1.0, 0.5, 0.05])[:, None]
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(v)))


def test_exact_gaussian_flow_survives_the_reparameterisation():
    """A data-predicting oracle x1_hat = x_t + (1 - t) s(x_t, t, d) samples the exact flow map at every budget."""
    oracle = gaussian_case.ORACLE

    class DataOracle(nnx.Module):
        def __call__(self, x_t, t, d, cond=None, *, train=False):
            return x_t + (1.0 - t)[:, None] * oracle(x_t, t, d, cond)

    model = DataPrediction(DataOracle(), min_remaining=1e-6)
    x0 = jax.random.normal(jax.random.PRNGKey(5), (256, 3))
    exact = euler_sample(oracle, x0, Shortcut(Shortcut.Config(flow_budget=None)).sample_plan(128))
    for n in (1, 2, 4):
        np.testing.assert_allclose(euler_sample(lambda x, t, d, c: model(x, t, d, c), x0, Shortcut().sample_plan(n)), exact, rtol=1e-4, atol=1e-4)


def test_factory_wraps_only_for_data_prediction():
    cfg = ResidualMLP.Config(_target_="shortcutlib.nn.mlp.ResidualMLP", hidden=16, depth=1)
    plain = build_backbone(cfg, data_shape=(2,), rngs=nnx.Rngs(0))
    wrapped = build_backbone(dataclasses.replace(cfg, prediction="data", min_remaining=0.1), data_shape=(2,), rngs=nnx.Rngs(0))
    assert not isinstance(plain, DataPrediction)
    assert isinstance(wrapped, DataPrediction) and wrapped.min_remaining == 0.1
    with pytest.raises(ValueError, match="prediction"):
        with_prediction(plain, "epsilon")
    with pytest.raises(ValueError, match="min_remaining"):
        DataPrediction(plain, min_remaining=0.0)
