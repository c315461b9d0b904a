"""The public API: load a run from its checkpoint alone, sample at any budget, query the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import shortcutlib
from shortcutlib.config import ConfigError
from shortcutlib.run import main

TOY = ["domain=toy2d", "model.hidden=32", "model.depth=1", "train.steps=12", "train.warmup_steps=0", "train.log_every=4",
       "domain.eval_samples=96", "domain.flow_steps=10", "eval.steps=[1,3]", "eval.visualize_steps=[1]", "logging.progress=false"]
DIGITS = ["domain=digits", "model.hidden=32", "model.depth=1", "model.num_heads=2", "train.steps=6", "train.batch_size=16",
          "train.warmup_steps=0", "train.log_every=3", "domain.eval_draws=1", "eval.steps=[1,2]", "eval.visualize_steps=[1]",
          "logging.progress=false"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "run"
    assert main([*TOY, f"out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    cache = tmp_path_factory.mktemp("cache")
    assert main([*DIGITS, f"domain.cache_dir={cache}", f"out_dir={out}"]) == 0
    return out


def test_toy_samples_equal_what_evaluation_drew(toy_run):
    assert main(["mode=eval", f"ckpt={toy_run}", "eval.steps=[1,3]", "eval.visualize_steps=[1]", "logging.progress=false"]) == 0
    model = shortcutlib.load(toy_run)
    assert model.metadata["step"] == 12 and model.metadata["domain"] == "toy2d" and model.metadata["objective"] == "Shortcut"
    assert model.metadata["config"]["train"]["steps"] == 12
    for n in (1, 3):
        drawn = np.load(toy_run / "eval_step12" / "samples" / f"samples_{n}steps.npy")
        # Evaluation passes its noise in, the API draws it inside the compiled sampler: equal to rounding.
        np.testing.assert_allclose(model.sample(96, steps=n, seed=0), drawn, rtol=1e-6, atol=1e-6)
    # Budgets never trained or evaluated work too; the seed fixes the draw.
    np.testing.assert_array_equal(model.sample(5, steps=7, seed=3), model.sample(5, steps=7, seed=3))
    assert not np.array_equal(model.sample(5, steps=7, seed=3), model.sample(5, steps=7, seed=4))


def test_network_access_in_model_space(toy_run):
    model = shortcutlib.load(toy_run)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    v = np.asarray(model.velocity(x, 0.0, 1.0))
    assert v.shape == (4, 2)
    np.testing.assert_allclose(np.asarray(model.step(x, 0.0, 1.0)), x + v, rtol=1e-6)
    # One Euler step of size 1 from the same noise is the 1-step sample.
    noise = x
    np.testing.assert_allclose(model.sample(4, steps=1, noise=noise), x + v, rtol=1e-5, atol=1e-6)


def test_digits_samples_are_uint8_and_equal_what_evaluation_drew(digits_run):
    model = shortcutlib.load(digits_run)
    for n in (1, 2):
        drawn = np.load(digits_run / "samples" / f"samples_{n}steps.npy")
        got = model.sample(len(drawn), steps=n, seed=0)
        assert got.dtype == np.uint8 and got.shape == drawn.shape == (len(drawn), 8, 8, 1)
        np.testing.assert_array_equal(got, drawn)


def test_mode_sample_writes_samples_through_the_api(digits_run):
    assert main(["mode=sample", f"ckpt={digits_run}", "sample.num=10", "sample.steps=[1,2]", "eval.visualize_steps=[1]",
                 "logging.progress=false"]) == 0
    written = np.load(digits_run / "sample_step6" / "samples.npz")
    model = shortcutlib.load(digits_run)
    np.testing.assert_array_equal(written["samples_2steps"], model.sample(10, steps=2, cond=written["cond"], seed=0))
    assert (digits_run / "sample_step6" / "grid_1steps.png").is_file()


def test_bad_input_gets_one_line(digits_run, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint in"):
        shortcutlib.load(tmp_path)
    model = shortcutlib.load(digits_run)
    with pytest.raises(ValueError, match=r"cond must be 3 integer class labels, shape \(3,\)"):
        model.sample(3, cond=np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match=r"class labels must be in 0..9 \(10: unconditional\); got 0..11"):
        model.sample(3, cond=np.array([0, 11, 2]))
    with pytest.raises(ValueError, match="noise has shape"):
        model.sample(3, noise=np.zeros((3, 8, 8)))


def _edited_copy(run: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    (meta_file,) = (copy / "checkpoints").glob("*/meta/metadata")
    meta = json.loads(meta_file.read_text())
    edit(meta["config"])
    meta_file.write_text(json.dumps(meta))
    return copy


def test_checkpoints_of_an_incompatible_version_are_named(toy_run, tmp_path):
    missing = _edited_copy(toy_run, tmp_path / "a", lambda c: c["objective"].pop("_target_"))
    with pytest.raises(ConfigError, match="written by an incompatible version"):
        shortcutlib.load(missing)
    reshaped = _edited_copy(toy_run, tmp_path / "b", lambda c: c["model"].update(hidden=48))
    with pytest.raises(ConfigError, match="does not fit the network its config describes"):
        shortcutlib.load(reshaped)


ROBOT = ["domain=robot", "task=reacher", "domain.num_demos=6", "domain.obs_horizon=2", "domain.horizon=8", "domain.action_horizon=4",
         "domain.val_fraction=0.2", "train.steps=4", "train.batch_size=16", "train.warmup_steps=0", "eval.enabled=false",
         "logging.progress=false"]


@pytest.fixture(scope="module")
def robot_run(tmp_path_factory) -> Path:
    pytest.importorskip("gymnasium")
    out = tmp_path_factory.mktemp("robot") / "run"
    data = tmp_path_factory.mktemp("robot_data")
    assert main([*ROBOT, f"domain.data_dir={data}", f"out_dir={out}"]) == 0
    return out


class _Recorder:
    """A policy that passes calls through and keeps the actions it returned."""

    def __init__(self, policy):
        self.policy, self.actions = policy, []

    @property
    def planned(self):
        return self.policy.planned

    def reset(self):
        self.policy.reset()

    def act(self, observation):
        action = self.policy.act(observation)
        self.actions.append(np.asarray(action)[0])
        return action


def test_policy_drives_an_episode_with_the_rollouts_actions(robot_run):
    from domains.robot.rollout import EVAL_STREAM, evaluate_policy
    from domains.robot.tasks import episode_seed

    model = shortcutlib.load(robot_run)
    spec = model.domain.spec
    recorder = _Recorder(model.policy(steps=1, seed=3))
    metrics = evaluate_policy("reacher", recorder, 1, seed=11)
    # The same episode driven by hand, as a user would in a Gymnasium loop.
    env = spec.make_env(seed=11)
    observation, _ = env.reset(seed=episode_seed(11, EVAL_STREAM, 0), options=spec.reset_options(0))
    policy, actions, done = model.policy(steps=1, seed=3), [], False
    while not done:
        action = policy.act(observation)
        actions.append(action)
        observation, _, terminated, truncated, _ = env.step(np.clip(action, env.action_space.low, env.action_space.high))
        done = terminated or truncated
    assert action.shape == env.action_space.shape
    assert len(actions) == metrics["mean_length"] == len(recorder.actions)
    np.testing.assert_allclose(np.stack(actions), np.stack(recorder.actions), rtol=0, atol=0)
    chunks = model.sample(3, steps=2)  # validation histories as the condition, raw action units
    assert chunks.shape == (3, 8, model.domain.action_dim) and np.isfinite(chunks).all()


def test_policy_rejects_an_observation_of_the_wrong_dimension(robot_run):
    policy = shortcutlib.load(robot_run).policy()
    with pytest.raises(ValueError, match="observation of dimension 3; this policy takes the task's observations, 10 values"):
        policy.act(np.zeros(3, np.float32))
