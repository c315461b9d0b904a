"""Demonstration collection (Minari + HDF5) and closed-loop evaluation of chunk policies."""

import h5py
import numpy as np
import pytest

from domains.robot.collect import main
from domains.robot.expert_data import collect
from domains.robot.experts.reacher import reacher_action
from domains.robot.policy import RecedingHorizonPolicy
from domains.robot.rollout import evaluate_policy, random_chunk_policy
from domains.robot.tasks import episode_seed, get_task

REACHER = get_task("reacher")


def closed_loop(chunk_fn, obs_horizon: int, action_horizon: int) -> RecedingHorizonPolicy:
    return RecedingHorizonPolicy(chunk_fn, REACHER.obs_fn, obs_horizon, action_horizon, row_dim=10)


def reacher_expert_chunks(horizon: int):
    """The reacher expert (elbow up) as a chunk function: its action for the latest observation, repeated."""

    def chunks(obs_history: np.ndarray) -> np.ndarray:
        return np.stack([np.repeat(reacher_action(h[-1], 1.0)[None], horizon, axis=0) for h in obs_history])

    return chunks


def _episode_ends(f) -> np.ndarray:
    return np.flatnonzero(f["terminals"][:] | f["timeouts"][:])


def test_collect_writes_minari_and_hdf5(tmp_path, monkeypatch):
    import minari

    result = collect("reacher", 3, tmp_path, seed=0, progress=False, elbow="random")
    assert result["success_rate"] == 1.0 and result["num_steps"] == 150
    assert result["minari_id"] == "shortcutlib/reacher/expert-v0"

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(result["minari_root"]))
    dataset = minari.load_dataset(result["minari_id"])
    assert dataset.total_episodes == 3 and dataset.total_steps == 150
    episodes = list(dataset.iterate_episodes())
    assert [len(e.actions) for e in episodes] == [50, 50, 50]
    assert episodes[0].observations.shape == (51, 10) and episodes[0].infos["success"].shape == (51,)

    with h5py.File(result["hdf5"]) as f:
        n = len(f["actions"])
        assert n == 150
        for key in ("observations", "next_observations", "rewards", "terminals", "timeouts", "infos/success"):
            assert len(f[key]) == n, key
        assert f["observations"].shape == (150, 10) and f["actions"].shape == (150, 2)
        # Reacher never terminates: each episode ends on a timeout at its 50th step.
        np.testing.assert_array_equal(_episode_ends(f), [49, 99, 149])
        assert not f["terminals"][:].any()
        # Both files hold the same flat observations and actions.
        np.testing.assert_array_equal(f["observations"][50:100], episodes[1].observations[:-1])
        np.testing.assert_array_equal(f["next_observations"][50:100], episodes[1].observations[1:])
        np.testing.assert_array_equal(f["actions"][100:150], episodes[2].actions)
        assert f["infos/success"][49] and f["infos/success"][99] and f["infos/success"][149]


def test_collect_cli_marks_terminal_steps(tmp_path, capsys):
    result = main(["task=pointmaze_umaze", "num_episodes=2", f"out_dir={tmp_path}", "seed=3", "kp=10.0"])
    assert "success_rate: 1.0" in capsys.readouterr().out
    with h5py.File(result["hdf5"]) as f:
        ends = _episode_ends(f)
        # PointMaze terminates on reaching the goal: two terminal rows, the last row of the file among them.
        assert f["terminals"][:].sum() == 2 and len(ends) == 2 and ends[-1] == len(f["actions"]) - 1
        assert f["infos/success"][ends].all() and not f["infos/success"][: ends[0]].any()
        assert f["observations"].shape[1] == 6 and f.attrs["seed"] == 3


def test_evaluate_expert_chunks_beats_random():
    expert = evaluate_policy("reacher", closed_loop(reacher_expert_chunks(4), 2, 1), 4, seed=0, num_envs=2)
    assert expert["success_rate"] == 1.0 and expert["mean_length"] == 50.0 and expert["num_episodes"] == 4
    assert expert["num_policy_calls"] == 2 * 50  # two waves of two envs, one chunk per step
    assert expert["policy_latency_ms"] > 0
    rand = evaluate_policy("reacher", random_chunk_policy("reacher", 4, 4, seed=0), 4, seed=0, num_envs=4)
    assert rand["success_rate"] <= 0.25 and rand["mean_return"] < expert["mean_return"]
    assert rand["num_policy_calls"] == 13  # ceil(50 / 4) calls for one wave


def test_policy_sees_padded_histories_of_flat_observations():
    calls = []

    def chunks(obs_history):
        calls.append(obs_history.copy())
        return np.zeros((obs_history.shape[0], 3, 2), np.float32)

    evaluate_policy("reacher", closed_loop(chunks, 3, 2), 3, seed=5, num_envs=2)
    first = calls[0]
    assert first.shape == (2, 3, 10) and first.dtype == np.float32
    np.testing.assert_array_equal(first[:, 0], first[:, 2])  # initial history = first observation repeated
    later = calls[1]  # after two steps: [o0, o1, o2], newest last
    np.testing.assert_array_equal(later[:, 0], first[:, 0])
    assert not np.array_equal(later[:, 1], later[:, 2])
    # The last wave has one episode for two envs: the idle slot repeats the first slot's history.
    last = calls[-1]
    np.testing.assert_array_equal(last[0], last[1])


def test_evaluation_and_collection_episodes_differ():
    assert episode_seed(0, 0, 0) != episode_seed(0, 1, 0)
    assert episode_seed(0, 1, 0) == episode_seed(0, 1, 0)


def test_wrong_chunk_shape_is_rejected():
    with pytest.raises(ValueError, match=r"must return \(N=1, H>=1, A\) chunks"):
        evaluate_policy("reacher", closed_loop(lambda h: np.zeros((h.shape[0], 2)), 1, 1), 1, seed=0)


def test_an_observation_of_the_wrong_dimension_is_named():
    policy = closed_loop(reacher_expert_chunks(2), 1, 1)
    with pytest.raises(ValueError, match="observation of dimension 7; this policy takes the task's observations, 10 values each"):
        policy.act(np.zeros(7))


def test_video_of_first_episode(tmp_path):
    from domains.robot.video import ensure_rendering

    try:
        ensure_rendering()
    except RuntimeError as e:
        pytest.skip(f"no headless OpenGL backend for MuJoCo on this machine: {e}")
    import imageio.v2 as imageio

    metrics = evaluate_policy("reacher", closed_loop(reacher_expert_chunks(8), 1, 8), 1, seed=0, record_video=tmp_path / "episode.gif")
    frames = imageio.mimread(metrics["video_path"])
    assert len(frames) == 51  # the reset frame and one per step
    assert frames[0].shape[:2] == (256, 256)
