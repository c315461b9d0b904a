"""Readers of Minari, D4RL-HDF5 and OGBench files, on tiny files written here."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from domains.robot.datasets import (
    Episodes,
    flatten_observations,
    read_d4rl_hdf5,
    read_minari,
    read_ogbench_npz,
    split_episodes,
)

LENGTHS = [3, 5, 2]


def expected(obs_dim: int = 3, action_dim: int = 2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-episode observations/actions whose values identify episode and step."""
    obs = [np.arange(t * obs_dim, dtype=np.float32).reshape(t, obs_dim) + 100 * e for e, t in enumerate(LENGTHS)]
    act = [np.arange(t * action_dim, dtype=np.float32).reshape(t, action_dim) - 50 * e for e, t in enumerate(LENGTHS)]
    return obs, act


def assert_episodes(got: Episodes, obs: list[np.ndarray], act: list[np.ndarray]) -> None:
    assert got.num_episodes == len(obs)
    np.testing.assert_array_equal(got.lengths, [len(a) for a in act])
    for i in range(len(obs)):
        o, a = got.episode(i)
        np.testing.assert_array_equal(o, obs[i])
        np.testing.assert_array_equal(a, act[i])
    assert got.observations.dtype == np.float32 and got.actions.dtype == np.float32


# --- Episodes container --------------------------------------------------------------------
def test_episodes_select_concatenate_and_split():
    obs, act = expected()
    eps = Episodes.from_lists(obs, act, success=[True, False, True])
    np.testing.assert_array_equal(eps.starts, [0, 3, 8])
    np.testing.assert_array_equal(eps.episode_ids(), [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    picked = eps.select([2, 0])
    assert_episodes(picked, [obs[2], obs[0]], [act[2], act[0]])
    np.testing.assert_array_equal(picked.success, [True, True])
    both = Episodes.concatenate([eps, picked])
    assert_episodes(both, obs + [obs[2], obs[0]], act + [act[2], act[0]])

    train, val = split_episodes(eps, 0.34, seed=3)
    again_train, again_val = split_episodes(eps, 0.34, seed=3)
    assert val.num_episodes == 1 and train.num_episodes == 2
    np.testing.assert_array_equal(val.observations, again_val.observations)
    # Whole episodes: every observation lands in exactly one split.
    rows = {tuple(r) for r in np.concatenate([train.observations, val.observations])}
    assert rows == {tuple(r) for r in eps.observations} and train.num_steps + val.num_steps == eps.num_steps
    # Different seeds eventually pick a different validation episode.
    picks = {tuple(split_episodes(eps, 0.34, seed=s)[1].observations[0]) for s in range(10)}
    assert len(picks) > 1
    assert split_episodes(eps, 0.0, seed=0)[1] is None


def test_episodes_reject_bad_boundaries():
    with pytest.raises(ValueError, match="starts"):
        Episodes(np.zeros((4, 1)), np.zeros((4, 1)), starts=[0, 2, 2])
    with pytest.raises(ValueError, match="actions"):
        Episodes(np.zeros((4, 1)), np.zeros((3, 1)), starts=[0])


def test_flatten_dict_observations_uses_observation_then_goal():
    obs = {"achieved_goal": np.ones((2, 2)), "desired_goal": np.full((2, 2), 7.0), "observation": np.zeros((2, 3))}
    np.testing.assert_array_equal(flatten_observations(obs), [[0, 0, 0, 7, 7]] * 2)
    np.testing.assert_array_equal(flatten_observations(obs, ["achieved_goal"]), np.ones((2, 2)))
    with pytest.raises(KeyError, match="not in the dataset"):
        flatten_observations(obs, ["goal"])


# --- Minari --------------------------------------------------------------------------------
def write_minari(root, dataset_id: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import gymnasium as gym
    from minari import create_dataset_from_buffers
    from minari.data_collector.episode_buffer import EpisodeBuffer

    obs, act = expected()
    box = lambda n: gym.spaces.Box(-1e3, 1e3, (n,), np.float32)  # noqa: E731
    obs_space = gym.spaces.Dict({"observation": box(3), "achieved_goal": box(2), "desired_goal": box(2)})
    buffers = []
    for e, t in enumerate(LENGTHS):
        # Minari stores T + 1 observations: the last (here all -1) has no action.
        o = np.concatenate([obs[e], -np.ones((1, 3), np.float32)])
        goal = np.full((t + 1, 2), 10.0 + e, np.float32)
        buffers.append(
            EpisodeBuffer(
                id=e,
                observations={
                    "observation": o,
                    "achieved_goal": np.zeros((t + 1, 2), np.float32),
                    "desired_goal": goal,
                },
                actions=act[e],
                rewards=list(np.full(t, float(e))),
                terminations=[False] * (t - 1) + [True],
                truncations=[False] * t,
                infos={"success": np.array([False] * t + [e == 1])},
            )
        )
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            create_dataset_from_buffers(dataset_id, buffers, observation_space=obs_space, action_space=box(2))
    finally:
        os.environ.pop("MINARI_DATASETS_PATH") if old is None else os.environ.__setitem__("MINARI_DATASETS_PATH", old)
    goals = [np.full((t, 2), 10.0 + e, np.float32) for e, t in enumerate(LENGTHS)]
    return [np.concatenate([o, g], axis=1) for o, g in zip(obs, goals)], act


def test_minari_reader_flattens_goal_and_drops_final_observation(tmp_path, monkeypatch):
    obs, act = write_minari(tmp_path, "test/toy/demo-v0")
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    got = read_minari("test/toy/demo-v0", root=tmp_path)
    assert_episodes(got, obs, act)
    np.testing.assert_array_equal(got.rewards, np.repeat([0.0, 1.0, 2.0], LENGTHS))
    np.testing.assert_array_equal(got.success, [False, True, False])
    assert "MINARI_DATASETS_PATH" not in os.environ  # the root is only set while reading
    # The environment variable works as well, and max_episodes keeps the first episodes.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    first = read_minari("test/toy/demo-v0", max_episodes=2)
    assert_episodes(first, obs[:2], act[:2])


def test_minari_reader_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read_minari("D4RL/pointmaze/large-v2", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "domains.robot.collect" in message and "minari download" in message


# --- D4RL HDF5 -----------------------------------------------------------------------------
def test_d4rl_hdf5_reader_splits_on_terminals_or_timeouts(tmp_path):
    import h5py

    obs, act = expected()
    n = sum(LENGTHS)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[2] = True  # episode 0 ends in a terminal state
    timeouts[7] = True  # episode 1 is cut off; episode 2 has no flag (the file ends)
    goal = np.repeat(np.arange(3.0), LENGTHS)[:, None] * np.ones((1, 2))
    success = np.zeros(n, bool)
    success[6] = True
    path = tmp_path / "maze.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate(obs)
        f["actions"] = np.concatenate(act)
        f["rewards"] = np.arange(n, dtype=np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f["next_observations"] = np.zeros((n, 3))
        f["infos/goal"] = goal
        f["infos/success"] = success
    got = read_d4rl_hdf5(path)
    assert_episodes(got, obs, act)
    np.testing.assert_array_equal(got.rewards, np.arange(n))
    np.testing.assert_array_equal(got.success, [False, True, False])
    with_goal = read_d4rl_hdf5(path, extra_obs=["infos/goal"], max_episodes=2)
    assert_episodes(
        with_goal,
        [np.concatenate([o, np.full((len(o), 2), e, np.float32)], 1) for e, o in enumerate(obs[:2])],
        act[:2],
    )
    with pytest.raises(FileNotFoundError, match="domains.robot.collect"):
        read_d4rl_hdf5(tmp_path / "missing.hdf5")


def test_d4rl_hdf5_reader_flattens_grouped_observations(tmp_path):
    import h5py

    obs, act = expected()
    n = sum(LENGTHS)
    path = tmp_path / "grouped.hdf5"
    with h5py.File(path, "w") as f:
        f["observations/observation"] = np.concatenate(obs)
        f["observations/desired_goal"] = np.ones((n, 1))
        f["actions"] = np.concatenate(act)
        f["terminals"] = np.isin(np.arange(n), [2, 7, 9])
    got = read_d4rl_hdf5(path)
    assert_episodes(got, [np.concatenate([o, np.ones((len(o), 1))], 1) for o in obs], act)
    assert got.rewards is None and got.success is None


# --- OGBench -------------------------------------------------------------------------------
def test_ogbench_raw_layout_drops_the_final_state_rows(tmp_path):
    obs, act = expected()
    # Released layout: every trajectory ends with an extra row (state s_T, dummy action) flagged terminal.
    raw_obs = np.concatenate([np.concatenate([o, np.full((1, 3), -9.0)]) for o in obs])
    raw_act = np.concatenate([np.concatenate([a, np.full((1, 2), -9.0)]) for a in act])
    terminals = np.concatenate([np.r_[np.zeros(t), 1.0] for t in LENGTHS]).astype(np.float32)
    path = tmp_path / "cube-single-play-v0.npz"
    np.savez(path, observations=raw_obs, actions=raw_act, terminals=terminals, qpos=np.zeros((len(raw_obs), 4)))
    got = read_ogbench_npz(path)
    assert_episodes(got, obs, act)
    # The same file through ogbench's own loader gives the same transitions.
    from ogbench.utils import load_dataset

    theirs = load_dataset(str(path))
    np.testing.assert_array_equal(theirs["observations"], got.observations)
    np.testing.assert_array_equal(np.flatnonzero(theirs["terminals"]) + 1, got.ends)


def test_ogbench_transition_and_compact_layouts(tmp_path):
    from ogbench.utils import load_dataset

    obs, act = expected()
    raw_obs = np.concatenate([np.concatenate([o, np.full((1, 3), -9.0)]) for o in obs]).astype(np.float32)
    raw_act = np.concatenate([np.concatenate([a, np.full((1, 2), -9.0)]) for a in act]).astype(np.float32)
    terminals = np.concatenate([np.r_[np.zeros(t), 1.0] for t in LENGTHS]).astype(np.float32)
    raw = tmp_path / "raw.npz"
    np.savez(raw, observations=raw_obs, actions=raw_act, terminals=terminals)
    for compact in (False, True):
        data = load_dataset(str(raw), compact_dataset=compact)
        n = len(data["observations"])
        data["rewards"] = np.zeros(n, np.float32)
        data["masks"] = np.ones(n, np.float32)
        data["masks"][np.flatnonzero(data["observations"][:, 0] == 103.0)] = 0.0  # success in episode 1
        path = tmp_path / f"saved-{compact}.npz"
        np.savez(path, **data)
        got = read_ogbench_npz(path)
        assert_episodes(got, obs, act)
        np.testing.assert_array_equal(got.success, [False, True, False])


def test_ogbench_missing_file_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_datasets"):
        read_ogbench_npz(tmp_path / "nope.npz")
