"""RobotDomain on tiny datasets: batches, state round trip, local collection cache, evaluation."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.robot.chunking import make_windows
from domains.robot.datasets import Episodes
from domains.robot.domain import RobotConfig, RobotDomain
from domains.robot.normalize import Normalizer
from shortcutlib.config import compose_config, typed
from shortcutlib.domain import Domain
from shortcutlib.nn.mlp import ResidualMLP


def robot_config(values: dict) -> RobotConfig:
    return typed(RobotConfig, values, "domain")


TINY = {"obs_horizon": 2, "horizon": 4, "action_horizon": 2, "val_fraction": 0.25, "split_seed": 0, "action_norm": "minmax"}


def tiny_episodes(seed: int = 0, lengths=(6, 9, 5, 8), obs_dim: int = 3, action_dim: int = 2) -> Episodes:
    rng = np.random.default_rng(seed)
    obs = [rng.normal(size=(t, obs_dim)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0] for t in lengths]
    act = [rng.uniform(-2, 3, size=(t, action_dim)) for t in lengths]
    return Episodes.from_lists(obs, act)


def write_hdf5(path: Path, episodes: Episodes) -> Path:
    import h5py

    ends = np.zeros(episodes.num_steps, bool)
    ends[episodes.ends - 1] = True
    with h5py.File(path, "w") as f:
        f["observations"] = episodes.observations
        f["actions"] = episodes.actions
        f["rewards"] = np.zeros(episodes.num_steps, np.float32)
        f["terminals"] = np.zeros(episodes.num_steps, bool)
        f["timeouts"] = ends
    return path


@pytest.fixture
def domain(tmp_path) -> RobotDomain:
    return RobotDomain(robot_config({"source": "hdf5", "path": str(write_hdf5(tmp_path / "demo.hdf5", tiny_episodes())), **TINY}))


def robot(*overrides: str):
    return compose_config(["domain=robot", *overrides])


def test_task_presets_are_a_config_group():
    large = robot("task=pointmaze_large")
    assert large.domain.name == "robot" and large.domain.source == "local" and large.domain.task == "pointmaze_large"
    assert large.domain.num_demos == 300 and large.domain.dataset_id == "D4RL/pointmaze/large-v2"
    assert robot("task=pointmaze_large", "domain.num_demos=7").domain.num_demos == 7
    assert (large.domain.horizon, large.domain.action_horizon) == (16, 4)  # no window preset: the defaults
    reacher = robot().domain  # the default task
    assert reacher.task == "reacher" and (reacher.horizon, reacher.action_horizon) == (8, 2)  # re-plans often
    assert robot("domain.horizon=16").domain.horizon == 16
    with pytest.raises(ValueError, match="source"):
        robot("domain.source=web")


def test_training_steps_follow_the_task_preset():
    assert robot().train.steps == 16000  # the reacher preset
    assert robot("task=pointmaze_large").train.steps == 8000  # no preset value: the domain's
    assert robot("train.steps=300").train.steps == 300


def test_batches_are_raw_chunks_with_normalised_histories(domain):
    assert isinstance(domain, Domain)
    assert domain.sample_shape == (4, 2) and domain.num_classes == 0 and domain.obs_dim == 3
    assert domain.train_episodes.num_episodes == 3 and domain.val_episodes.num_episodes == 1
    batch = next(domain.train_data(5, seed=0))
    assert batch["x"].shape == (5, 4, 2) and batch["cond"].shape == (5, 2, 3)
    assert batch["x"].dtype == np.float32 and batch["cond"].dtype == np.float32
    # Every batch row is one of the training windows: raw chunk, and its history normalised.
    obs_w, act_w = make_windows(domain.train_episodes, 2, 4)
    obs_w = domain.obs_normalizer.encode(obs_w)
    for x, c in zip(batch["x"], batch["cond"]):
        match = np.flatnonzero(np.all(act_w == x, axis=(1, 2)))
        assert len(match) >= 1 and np.allclose(obs_w[match[0]], c, atol=1e-6)
    # Normalisers come from the training split only.
    assert domain.obs_normalizer == Normalizer.fit(domain.train_episodes.observations, "meanstd")
    z = domain.codec.encode(act_w)
    assert z.min() >= -1 - 1e-6 and z.max() <= 1 + 1e-6


def test_start_batch_resumes_the_same_stream(domain):
    full = list(itertools.islice(domain.train_data(4, seed=3), 12))
    resumed = list(itertools.islice(domain.train_data(4, seed=3, start_batch=7), 5))
    for a, b in zip(full[7:], resumed):
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["cond"], b["cond"])


def test_eval_data_and_sample_cond_come_from_validation(domain):
    val_obs, val_act = make_windows(domain.val_episodes, 2, 4)
    batches = list(domain.eval_data(3, seed=0))
    assert sum(len(b["x"]) for b in batches) == (len(val_act) // 3) * 3
    for b in batches:
        for x in b["x"]:
            assert np.any(np.all(val_act == x, axis=(1, 2)))
    cond = domain.sample_cond(4, seed=1)
    assert cond.shape == (4, 2, 3)
    val_norm = domain.obs_normalizer.encode(val_obs)
    assert all(np.any(np.all(np.isclose(val_norm, c, atol=1e-6), axis=(1, 2))) for c in cond)
    np.testing.assert_array_equal(cond, domain.sample_cond(4, seed=1))


def test_state_round_trip_through_json(domain, tmp_path):
    state = json.loads(json.dumps(domain.state()))
    other = RobotDomain(robot_config({"source": "hdf5", "path": str(write_hdf5(tmp_path / "other.hdf5", tiny_episodes(seed=9))), **TINY}))
    assert other.codec != domain.codec
    other.load_state(state)
    assert other.codec == domain.codec and other.obs_normalizer == domain.obs_normalizer
    assert other.state() == domain.state()
    x = next(domain.train_data(2, 0))["x"]
    np.testing.assert_array_equal(other.codec.encode(x), domain.codec.encode(x))
    bad = dict(state, horizon=8)
    with pytest.raises(ValueError, match="horizon"):
        other.load_state(bad)


def test_make_backbone_predicts_chunks(domain):
    pytest.importorskip("shortcutlib.nn.factory")
    from flax import nnx

    # Abstract build and call (shapes only): the wiring is under test, not the numerics.
    model = nnx.eval_shape(lambda: domain.make_backbone(ResidualMLP.Config(_target_="shortcutlib.nn.mlp.ResidualMLP", hidden=16, depth=1), nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    batch = next(domain.train_data(3, 0))
    x = jnp.asarray(domain.codec.encode(batch["x"]))

    def apply(params, x, cond):
        return nnx.merge(graphdef, params)(x, jnp.zeros(3), jnp.zeros(3), cond)

    v = jax.eval_shape(apply, params, x, jnp.asarray(batch["cond"]))
    assert v.shape == (3, 4, 2)


def test_policy_normalises_and_decodes(domain):
    seen = {}

    def sample_fn(key, num_steps, num_samples, cond=None):
        # The policy is one jitted function: the spy reads cond when it runs.
        jax.debug.callback(lambda c: seen.update(cond=np.asarray(c)), cond)
        seen["n"] = num_steps
        return jnp.full((num_samples, *domain.sample_shape), 2.0)  # outside [-1, 1]: clipped

    policy = domain.make_policy(sample_fn, 4)
    obs = domain.val_episodes.observations[:4].reshape(2, 2, 3)
    chunk = policy(obs)
    assert chunk.shape == (2, 4, 2) and seen["n"] == 4
    np.testing.assert_allclose(seen["cond"], domain.obs_normalizer.encode(obs), atol=1e-6)
    np.testing.assert_allclose(chunk, np.broadcast_to(domain.train_episodes.actions.max(0), chunk.shape), atol=1e-5)


def test_policy_passes_the_noise_scale(domain):
    seen = []

    def sample_fn(key, num_steps, num_samples, cond=None, **kwargs):
        seen.append(kwargs)
        return jnp.zeros((num_samples, *domain.sample_shape))

    obs = domain.val_episodes.observations[:4].reshape(2, 2, 3)
    domain.make_policy(sample_fn, 1)(obs)
    domain.make_policy(sample_fn, 1, noise_scale=0.0)(obs)
    assert seen == [{}, {"noise_scale": 0.0}]
    with pytest.raises(ValueError, match="rollout.noise_scale"):
        domain.make_policy(sample_fn, 1, noise_scale=-0.5)


def test_visualize_writes_a_plot(domain, tmp_path):
    def sample_fn(key, num_steps, num_samples, cond=None):
        return np.random.default_rng(num_steps).uniform(-1, 1, (num_samples, *domain.sample_shape))

    domain.cfg.visualize.num_obs = 2
    paths = domain.visualize(sample_fn, [1, 4], tmp_path / "viz")
    assert len(paths) == 1 and paths[0].is_file() and paths[0].stat().st_size > 1000


def test_local_source_collects_once_then_reuses(tmp_path, monkeypatch):
    calls = []

    def fake_collect(task, num_episodes, out_dir, seed=0, **kwargs):
        calls.append((task, num_episodes, seed, kwargs))
        out = Path(out_dir)
        return {"hdf5": str(write_hdf5(out / "demos.hdf5", tiny_episodes(seed=seed))), "success_rate": 1.0}

    monkeypatch.setitem(sys.modules, "domains.robot.expert_data", types.SimpleNamespace(collect=fake_collect))
    # The reacher preset's executed-action noise reaches the collector and names the cache folder.
    preset = robot("task=reacher").domain
    noise = preset.action_noise
    cfg = {"source": "local", "task": "reacher", "num_demos": 4, "data_dir": str(tmp_path), "expert": {"k": 1}, "action_noise": noise, **TINY}
    first = RobotDomain(robot_config(cfg))
    second = RobotDomain(robot_config(cfg))
    assert noise > 0
    assert calls == [("reacher", 4, 0, {"action_noise": noise, "k": 1})]
    np.testing.assert_array_equal(first.train_episodes.actions, second.train_episodes.actions)
    folders = [p.name for p in tmp_path.iterdir()]
    assert folders == [f"reacher-n4-s0-k=1-noise={noise:g}"]  # no temporary folder left behind
    manifest = json.loads((tmp_path / folders[0] / "dataset.json").read_text())
    assert manifest["hdf5"] == "demos.hdf5" and manifest["collect"]["success_rate"] == 1.0


HAS_ROLLOUT = all(importlib.util.find_spec(f"domains.robot.{m}") for m in ("expert_data", "rollout"))


@pytest.mark.skipif(not HAS_ROLLOUT, reason="domains.robot.expert_data/rollout not available")
def test_evaluate_end_to_end_on_reacher(tmp_path):
    cfg = {
        "task": "reacher",
        "num_demos": 6,
        "data_dir": str(tmp_path / "data"),
        "obs_horizon": 2,
        "horizon": 8,
        "action_horizon": 4,
        "val_fraction": 0.2,
        "rollout": {"num_episodes": 2, "num_envs": 1},
    }
    domain = RobotDomain(robot_config(cfg))
    assert domain.obs_dim == 10 and domain.action_dim == 2
    # The Minari copy that collection writes alongside reads back to the same episodes.
    (folder,) = (tmp_path / "data").iterdir()
    minari_cfg = {"source": "minari", "path": str(folder / "minari"), "dataset_id": "shortcutlib/reacher/expert-v0"}
    via_minari = RobotDomain(robot_config({**cfg, **minari_cfg}))
    np.testing.assert_array_equal(via_minari.train_episodes.observations, domain.train_episodes.observations)
    np.testing.assert_array_equal(via_minari.val_episodes.actions, domain.val_episodes.actions)
    obs_w, act_w = make_windows(domain.train_episodes, 2, 8)
    keys = domain.obs_normalizer.encode(obs_w).reshape(len(obs_w), -1)
    targets = domain.codec.encode(act_w)

    def nearest_demo(key, num_steps, num_samples, cond=None):
        # Expert-like chunks: the demonstrated chunk of the nearest training history.
        d = ((cond.reshape(len(cond), 1, -1) - jnp.asarray(keys)[None]) ** 2).sum(-1)
        return jnp.asarray(targets)[d.argmin(1)]

    def zeros(key, num_steps, num_samples, cond=None):
        return jnp.zeros((num_samples, *domain.sample_shape))

    metrics = domain.evaluate(nearest_demo, [1, 2], tmp_path / "eval")
    for n in (1, 2):
        assert 0.0 <= metrics[f"success@{n}"] <= 1.0
        assert np.isfinite(metrics[f"return@{n}"]) and metrics[f"latency_ms@{n}"] >= 0
    zero = domain.evaluate(zeros, [1], tmp_path / "eval0")
    assert 0.0 <= zero["success@1"] <= 1.0 and np.isfinite(zero["return@1"])
