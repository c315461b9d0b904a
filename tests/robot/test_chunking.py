"""Diffusion-Policy windows against an obvious per-step loop, and normaliser round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from domains.robot.chunking import make_windows, window_indices
from domains.robot.datasets import Episodes
from domains.robot.normalize import Normalizer


def reference_windows(episodes: Episodes, to: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow, obvious version: per episode, per step, clamp into the episode."""
    obs_out, act_out = [], []
    for e in range(episodes.num_episodes):
        obs, act = episodes.episode(e)
        t = len(obs)
        for i in range(t):
            obs_out.append([obs[max(j, 0)] for j in range(i - to + 1, i + 1)])
            act_out.append([act[min(j, t - 1)] for j in range(i, i + h)])
    return np.array(obs_out), np.array(act_out)


def random_episodes(rng: np.random.Generator, lengths: list[int], obs_dim: int = 3, action_dim: int = 2) -> Episodes:
    obs = [rng.normal(size=(t, obs_dim)) for t in lengths]
    act = [rng.normal(size=(t, action_dim)) for t in lengths]
    return Episodes.from_lists(obs, act)


@pytest.mark.parametrize("to,h", [(1, 1), (2, 16), (3, 4), (5, 2)])
def test_windows_match_reference_loop(to, h):
    eps = random_episodes(np.random.default_rng(0), [1, 7, 2, 20, 3])
    obs, act = make_windows(eps, to, h)
    ref_obs, ref_act = reference_windows(eps, to, h)
    assert obs.shape == (eps.num_steps, to, 3) and act.shape == (eps.num_steps, h, 2)
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(act, ref_act)


def test_windows_pad_at_episode_edges_and_never_cross():
    # Values encode (episode, step) so any leak across a boundary is visible.
    lengths = [4, 3]
    obs = [np.array([[10.0 * e + i] for i in range(t)]) for e, t in enumerate(lengths)]
    act = [np.array([[100.0 * e + i] for i in range(t)]) for e, t in enumerate(lengths)]
    eps = Episodes.from_lists(obs, act)
    o, a = make_windows(eps, obs_horizon=3, action_horizon=5)
    # First step of episode 1 (flat index 4): history repeats its first observation.
    np.testing.assert_array_equal(o[4, :, 0], [10, 10, 10])
    np.testing.assert_array_equal(o[5, :, 0], [10, 10, 11])
    np.testing.assert_array_equal(o[3, :, 0], [1, 2, 3])
    # Last steps of episode 0 (flat 2, 3): chunks repeat its last action, not episode 1's.
    np.testing.assert_array_equal(a[2, :, 0], [2, 3, 3, 3, 3])
    np.testing.assert_array_equal(a[3, :, 0], [3, 3, 3, 3, 3])
    np.testing.assert_array_equal(a[4, :, 0], [100, 101, 102, 102, 102])
    obs_idx, act_idx = window_indices(eps, 3, 5)
    ep = eps.episode_ids()
    assert np.all(ep[obs_idx] == ep[:, None]) and np.all(ep[act_idx] == ep[:, None])


def test_normalizer_minmax_maps_to_unit_range_and_guards_constant_dims():
    rng = np.random.default_rng(1)
    x = np.stack([rng.uniform(-3, 5, 500), np.full(500, 2.5), rng.normal(size=500) * 1e-3], axis=1).astype(np.float32)
    norm = Normalizer.fit(x, "minmax")
    z = norm.encode(x)
    np.testing.assert_allclose(z[:, 0].min(), -1.0, atol=1e-6)
    np.testing.assert_allclose(z[:, 0].max(), 1.0, atol=1e-6)
    np.testing.assert_array_equal(z[:, 1], 0.0)  # constant dimension: value -> 0, no division by ~0
    assert np.isfinite(z).all() and np.abs(z).max() <= 1.0 + 1e-5
    np.testing.assert_allclose(norm.decode(z), x, rtol=1e-5, atol=1e-6)


def test_normalizer_meanstd_and_dict_round_trip_is_exact():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(200, 4, 5)) * [1, 2, 3, 0, 5] + [0, 1, -2, 7, 3]).astype(np.float32)
    norm = Normalizer.fit(x, "meanstd")
    z = norm.encode(x).reshape(-1, 5)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, [0, 1, 2, 4]].std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(z[:, 3], 0.0)
    for n in (norm, Normalizer.fit(x, "minmax"), Normalizer.fit(x, "identity")):
        back = Normalizer.from_dict(json.loads(json.dumps(n.to_dict())))
        assert back == n
        np.testing.assert_array_equal(back.encode(x), n.encode(x))


def test_normalizer_works_on_jax_arrays():
    import jax.numpy as jnp

    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    norm = Normalizer.fit(x, "minmax")
    z = norm.decode(jnp.asarray(norm.encode(x)))
    np.testing.assert_allclose(np.asarray(z), x, atol=1e-6)
