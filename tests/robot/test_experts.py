"""Scripted experts: exact planning pieces, success on a few episodes, and reacher bimodality."""

import numpy as np
import pytest

from domains.robot.expert_data import run_expert_episode
from domains.robot.experts.pointmaze import (
    bfs_distances,
    count_shortest_paths,
    free_cells,
    sample_shortest_path,
)
from domains.robot.experts.reacher import (
    LINK1,
    LINK2,
    ReacherExpert,
    inverse_kinematics,
    reacher_action,
)
from domains.robot.tasks import TASKS, episode_seed, get_task


def _success_rate(task: str, episodes: int, **expert_kwargs) -> float:
    spec = get_task(task)
    env = spec.make_env(seed=0)
    expert = spec.make_expert(env, np.random.default_rng(0), **expert_kwargs)
    try:
        runs = [run_expert_episode(spec, env, expert, episode_seed(0, 0, i), spec.reset_options(i)) for i in range(episodes)]
    finally:
        env.close()
    return float(np.mean([r.success for r in runs]))


def test_registry_lists_the_tasks_and_rejects_unknown_names():
    experts = {"reacher", "pointmaze_umaze", "pointmaze_medium", "pointmaze_large", "cube_single"}
    goal_conditioned = {"ogbench_cube_single", "cube_double", "scene", "puzzle_3x3"}  # data by OGBench's procedure
    assert set(TASKS) == experts | goal_conditioned
    assert {name for name, spec in TASKS.items() if spec.goal_conditioned} == goal_conditioned
    with pytest.raises(KeyError, match="choose one of"):
        get_task("reacher_v9")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_inverse_kinematics_reaches_the_target(sign):
    target = np.array([0.12, -0.07])
    q1, q2 = inverse_kinematics(target, sign)
    tip = np.array([LINK1 * np.cos(q1) + LINK2 * np.cos(q1 + q2), LINK1 * np.sin(q1) + LINK2 * np.sin(q1 + q2)])
    np.testing.assert_allclose(tip, target, atol=1e-12)
    assert np.sign(q2) == sign


@pytest.mark.parametrize("elbow", ["up", "down", "random"])
def test_reacher_expert_succeeds(elbow):
    assert _success_rate("reacher", 5, elbow=elbow) >= 0.8


def test_reacher_demonstrations_are_bimodal():
    """Same observation, two elbow solutions: opposite first actions, both succeed, their mean fails."""
    spec = get_task("reacher")
    env = spec.make_env(seed=0)
    seeds = [episode_seed(0, 0, i) for i in range(4)]
    first_obs, first_actions, success = {}, {}, {}
    for elbow in ("up", "down"):
        expert = ReacherExpert(np.random.default_rng(0), elbow)
        runs = [run_expert_episode(spec, env, expert, s, None) for s in seeds]
        first_obs[elbow] = np.stack([r.observations[0] for r in runs])
        first_actions[elbow] = np.stack([r.actions[0] for r in runs])
        success[elbow] = [r.success for r in runs]
    np.testing.assert_array_equal(first_obs["up"], first_obs["down"])
    assert all(success["up"]) and all(success["down"])
    # The elbow torque starts saturated in opposite directions.
    gap = np.abs(first_actions["up"] - first_actions["down"]).max(axis=1)
    assert np.all(gap > 1.0), gap

    class MeanOfModes:
        def reset(self, obs, info):
            pass

        def act(self, obs, info):
            return 0.5 * (reacher_action(obs, 1.0) + reacher_action(obs, -1.0))

    averaged = [run_expert_episode(spec, env, MeanOfModes(), s, None).success for s in seeds]
    env.close()
    assert sum(averaged) <= 1, averaged


def test_reacher_random_elbow_uses_both_modes():
    expert = ReacherExpert(np.random.default_rng(0), "random")
    signs = set()
    for _ in range(20):
        expert.reset(None, {})
        signs.add(expert.elbow_sign)
    assert signs == {1.0, -1.0}


def test_shortest_paths_on_an_open_grid():
    # 3x3 open room inside walls: corner to corner has C(4, 2) = 6 shortest paths of 4 moves.
    maze = [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
    dist = bfs_distances(free_cells(maze), (3, 3))
    counts = count_shortest_paths(dist)
    assert dist[(1, 1)] == 4 and counts[(1, 1)] == 6 and counts[(3, 1)] == 1
    rng = np.random.default_rng(0)
    paths = {tuple(sample_shortest_path((1, 1), dist, counts, rng)) for _ in range(200)}
    assert len(paths) == 6
    assert all(len(p) == 5 and p[0] == (1, 1) and p[-1] == (3, 3) for p in paths)


def test_medium_maze_has_several_equal_routes():
    env = get_task("pointmaze_medium").make_env()
    maze = env.unwrapped.maze.maze_map
    env.close()
    free = free_cells(maze)
    route_counts = [count_shortest_paths(bfs_distances(free, goal))[start] for goal in free for start in free]
    assert max(route_counts) >= 2  # some start/goal pairs have several shortest routes to split between


def test_pointmaze_umaze_expert_succeeds():
    assert _success_rate("pointmaze_umaze", 5) >= 0.8


def test_cube_oracle_succeeds_on_ogbench_tasks():
    assert _success_rate("cube_single", 3) >= 2 / 3


def test_action_noise_perturbs_execution_but_records_the_expert():
    """With action_noise the states leave the expert's path, and every recorded action is still
    the expert's own command in the state it was given (what a cloned policy must learn)."""
    spec = get_task("reacher")
    env = spec.make_env(seed=0)
    seed = episode_seed(0, 0, 0)
    clean = run_expert_episode(spec, env, ReacherExpert(np.random.default_rng(0), "up"), seed, None)
    noisy = run_expert_episode(
        spec, env, ReacherExpert(np.random.default_rng(0), "up"), seed, None, action_noise=0.3, rng=np.random.default_rng(1)
    )
    env.close()
    np.testing.assert_array_equal(clean.observations[0], noisy.observations[0])
    assert np.abs(clean.observations[1:] - noisy.observations[1:]).max() > 1e-2
    relabelled = np.stack([reacher_action(o, 1.0) for o in noisy.observations[:-1]])
    np.testing.assert_allclose(noisy.actions, relabelled, atol=1e-6)
    with pytest.raises(ValueError, match="rng"):
        run_expert_episode(spec, env, ReacherExpert(np.random.default_rng(0), "up"), seed, None, action_noise=0.1)
