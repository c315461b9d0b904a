"""OGBench datasets by OGBench's procedure, goal relabelling, bad input, and the goal-conditioned benchmark end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from domains.robot.datasets import Episodes, read_ogbench_npz
from domains.robot.domain import RobotConfig, RobotDomain
from domains.robot.goals import GoalConfig, sample_goals
from domains.robot.ogbench_data import (
    TRAIN,
    Procedure,
    cached_dataset,
    generate,
    generate_dataset,
    generate_episodes,
    layout,
    make_collection_env,
    parse_dataset_name,
)
from shortcutlib.config import ConfigError, compose_config, typed

ENVS = ["cube-single-v0", "cube-double-v0", "scene-v0", "puzzle-3x3-v0"]
LENGTH = 30  # steps per test episode (OGBench's: 1001)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Two training and one validation episode of every environment's play data."""
    root = tmp_path_factory.mktemp("ogbench")
    paths = {}
    for env_id in ENVS:
        procedure = Procedure(env_id, "play", episode_length=LENGTH)
        info = generate_dataset(procedure, root / f"{procedure.name}.npz", num_episodes=2, num_val_episodes=1, progress=False)
        paths[env_id] = Path(info["path"])
    return paths


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# --- the .npz layout -----------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENVS)
def test_generated_files_have_ogbench_layout(datasets, env_id):
    data, val = load(datasets[env_id]), load(datasets[env_id].with_name(datasets[env_id].stem + "-val.npz"))
    buttons = env_id.startswith(("scene", "puzzle"))
    expected_keys = {"observations", "actions", "terminals", "qpos", "qvel"} | ({"button_states"} if buttons else set())
    assert set(data) == expected_keys and set(val) == expected_keys
    for key, dtype in [("observations", np.float32), ("actions", np.float32), ("terminals", np.bool_), ("qpos", np.float32), ("qvel", np.float32), ("button_states", np.int64)]:
        if key in data:
            assert data[key].dtype == dtype and val[key].dtype == dtype, key
            assert len(data[key]) == 2 * LENGTH and len(val[key]) == LENGTH, key
    # Widths: those of the environment itself, and of the layout table the reader checks against.
    env = make_collection_env(Procedure(env_id, "play", episode_length=LENGTH))
    ob, _ = env.reset(seed=0)
    model = env.unwrapped._model
    widths = layout(env_id)
    assert data["observations"].shape[1] == ob.shape[0] == widths.observations
    assert data["qpos"].shape[1] == model.nq == widths.qpos and data["qvel"].shape[1] == model.nv == widths.qvel
    assert data["actions"].shape[1] == 5 and np.abs(data["actions"]).max() <= 1.0
    if buttons:
        assert data["button_states"].shape[1] == len(env.unwrapped._cur_button_states) == widths.button_states
    env.close()
    # Episodes end only at the time limit: terminals on each episode's last row.
    np.testing.assert_array_equal(np.flatnonzero(data["terminals"]), [LENGTH - 1, 2 * LENGTH - 1])
    # Rows hold the state before the action: qpos of row t+1 follows from row t (the arm moved).
    assert not np.array_equal(data["qpos"][0], data["qpos"][1])


@pytest.mark.parametrize("env_id", ["cube-single-v0", "puzzle-3x3-v0"])
def test_noisy_data_follow_the_markov_oracles(tmp_path, env_id):
    procedure = Procedure(env_id, "noisy", episode_length=LENGTH)
    assert procedure.p_random_action == (0.2 if env_id.startswith("puzzle") else 0.1)
    arrays, _ = generate(procedure, 2, progress=False)
    assert arrays["actions"].dtype == np.float32 and np.abs(arrays["actions"]).max() <= 1.0
    play, _ = generate(Procedure(env_id, "play", episode_length=LENGTH), 2, progress=False)
    assert not np.array_equal(arrays["actions"], play["actions"])


def test_reader_matches_ogbench_loader(datasets):
    from ogbench.utils import load_dataset

    path = datasets["cube-double-v0"]
    episodes = read_ogbench_npz(path, env_id="cube-double-v0")
    raw = load(path)
    # The terminal row of each episode (its last state, no transition from it) is dropped, as OGBench does.
    assert episodes.num_episodes == 2 and list(episodes.lengths) == [LENGTH - 1, LENGTH - 1]
    np.testing.assert_array_equal(episodes.observations, raw["observations"][~raw["terminals"]])
    theirs = load_dataset(str(path))
    np.testing.assert_array_equal(theirs["observations"], episodes.observations)
    np.testing.assert_array_equal(theirs["actions"], episodes.actions)
    np.testing.assert_array_equal(np.flatnonzero(theirs["terminals"]) + 1, episodes.ends)


def test_generation_is_seeded_and_independent_of_earlier_episodes():
    procedure = Procedure("scene-v0", "play", episode_length=12, seed=3)
    state = np.random.get_state()[1].copy()
    both, _ = generate_episodes(procedure, TRAIN, [0, 1])
    alone, _ = generate_episodes(procedure, TRAIN, [1])
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # NumPy's global generator is left as it was
    for key in both[1]:
        np.testing.assert_array_equal(both[1][key], alone[0][key])
    other, _ = generate_episodes(Procedure("scene-v0", "play", episode_length=12, seed=4), TRAIN, [1])
    assert not np.array_equal(other[0]["observations"], alone[0]["observations"])


def test_workers_give_the_same_dataset():
    procedure = Procedure("cube-single-v0", "play", episode_length=8)
    serial, _ = generate(procedure, 3, workers=1, progress=False)
    parallel, _ = generate(procedure, 3, workers=2, progress=False)
    for key in serial:
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_cache_is_written_once_and_atomically(tmp_path):
    procedure = Procedure("cube-single-v0", "play", episode_length=6)
    path, val, info = cached_dataset(tmp_path, procedure, num_episodes=2, num_val_episodes=1, progress=False)
    assert path.name == "cube-single-play-v0.npz" and val.name == "cube-single-play-v0-val.npz"
    assert [p.name for p in tmp_path.iterdir()] == ["cube-single-play-v0-n2-s0-len6-val1"]  # no temporary folder left
    assert info["episodes"] == 2 and info["rows"] == 12 and info["val_rows"] == 6 and info["seconds_per_episode"] > 0
    stamp = path.stat().st_mtime_ns
    again, _, _ = cached_dataset(tmp_path, procedure, num_episodes=2, num_val_episodes=1, progress=False)
    assert again == path and path.stat().st_mtime_ns == stamp


def test_collect_cli_writes_named_files(tmp_path, capsys):
    from domains.robot.collect import main

    result = main(["--dataset", "puzzle-3x3-noisy-v0", "--num-episodes", "1", "--episode-length=5", f"out_dir={tmp_path}", "progress=false"])
    assert result["rows"] == 5 and result["val_episodes"] == 0
    assert (tmp_path / "puzzle-3x3-noisy-v0.npz").is_file() and "seconds_per_episode" in capsys.readouterr().out
    assert parse_dataset_name("cube-double-play-v0") == ("cube-double-v0", "play")


# --- bad input -----------------------------------------------------------------------------
def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_environments_and_dataset_names_are_refused():
    from domains.robot.collect import main

    with pytest.raises(ValueError) as exc:
        Procedure("cube-sextuple-v0")
    assert "accepted: cube-single-v0" in one_line(exc)
    with pytest.raises(ValueError, match="dataset_type='messy': accepted: play, noisy"):
        Procedure("cube-single-v0", "messy")
    with pytest.raises(SystemExit, match="antmaze-large-navigate-v0.*accepted: cube-single-play-v0"):
        main(["dataset=antmaze-large-navigate-v0"])
    with pytest.raises(SystemExit, match="env='visual-cube-single-v0'"):
        main(["env=visual-cube-single-v0"])


def rewrite(datasets, tmp_path, env_id: str, change) -> Path:
    data = load(datasets[env_id])
    change(data)
    path = tmp_path / "bad.npz"
    np.savez(path, **data)
    return path


def test_bad_files_fail_with_one_line(datasets, tmp_path):
    env = "cube-double-v0"
    cases = {
        "lacks qpos; an OGBench cube-double-v0 dataset has observations float32 (N, 37)": lambda d: d.pop("qpos"),
        "observations is float64 (60, 37); expected float32 (60, 37)": lambda d: d.update(observations=d["observations"].astype(np.float64)),
        "terminals is float32 (60,); expected bool (60,)": lambda d: d.update(terminals=d["terminals"].astype(np.float32)),
        "actions is float32 (59, 5); expected float32 (60, 5)": lambda d: d.update(actions=d["actions"][:-1]),
        "NaN or infinite": lambda d: d["observations"].__setitem__((3, 4), np.nan),
    }
    for expected, change in cases.items():
        with pytest.raises(ValueError) as exc:
            read_ogbench_npz(rewrite(datasets, tmp_path, env, change), env_id=env)
        assert expected in one_line(exc)
    # A file cut short mid-episode is refused, with or without an environment to check against.
    cut = rewrite(datasets, tmp_path, env, lambda d: d.update({k: v[:-5] for k, v in d.items()}))
    for env_id in (env, None):
        with pytest.raises(ValueError, match="ends mid-episode"):
            read_ogbench_npz(cut, env_id=env_id)
    # Another environment's data: the widths name both.
    with pytest.raises(ValueError) as exc:
        read_ogbench_npz(datasets["cube-single-v0"], env_id=env)
    assert "observations is float32 (60, 28); expected float32 (60, 37)" in one_line(exc)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(datasets[env].read_bytes()[:500])
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_ogbench_npz(broken)


def test_bad_configs_fail_before_any_work(datasets, tmp_path, capsys):
    from shortcutlib.run import main

    def robot(*overrides):
        return compose_config(["domain=robot", "task=cube_double", *overrides])

    cfg = robot().domain
    assert (cfg.goals.p_curgoal, cfg.goals.p_trajgoal, cfg.goals.p_randomgoal, cfg.goals.geom_sample) == (0.0, 1.0, 0.0, False)
    assert cfg.ogbench.dataset_type == "play" and cfg.rollout.episodes_per_task == 10 and cfg.rollout.extra_noise_scales == [0.0]
    for override, expected in [
        ("domain.goals.p_trajgoal=0.5", "p_curgoal + p_trajgoal + p_randomgoal must be 1"),
        ("domain.ogbench.dataset_type=messy", "accepted: play, noisy"),
        ("domain.source=minari", "reads OGBench .npz datasets"),
        ("domain.task=cube_triple", "domain.task=cube_triple: accepted:"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            robot(override)
    # A dataset of another environment (its goal states have another width): one line, exit 2, nothing written.
    out = tmp_path / "run"
    status = main(["domain=robot", "task=cube_double", "domain.source=ogbench_npz", f"domain.path={datasets['scene-v0']}", f"out_dir={out}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shortcutlib: error")]
    assert status == 2 and len(errors) == 1 and "(60, 40); expected float32 (60, 37)" in errors[0] and not out.exists()


@pytest.mark.filterwarnings("ignore:.*precision lowered")  # OGBench's float64 action box
def test_policy_and_environment_refuse_goals_of_another_width(datasets):
    from domains.robot.tasks import GoalObservation

    domain = RobotDomain(typed(RobotConfig, {"task": "cube_double", "source": "ogbench_npz", "path": str(datasets["cube-double-v0"])}, "domain"))
    assert domain.obs_dim == 37 and domain.train_episodes.num_episodes == 2 and domain.val_episodes.num_episodes == 1  # the -val file
    policy = domain.make_policy(lambda key, n, num_samples, cond=None: np.zeros((num_samples, *domain.sample_shape)), 1)
    with pytest.raises(ValueError, match=r"\(N, To, 74\): each row the 37-D state, then the 37-D goal"):
        policy(np.zeros((1, domain.obs_horizon, 37 + 6), np.float32))
    import gymnasium
    import ogbench.manipspace  # noqa: F401

    env = GoalObservation(gymnasium.make("cube-double-v0", use_oracle_rep=True))
    with pytest.raises(ValueError, match="gives 6-D goals but this task expects 37-D goals"):
        env.reset(seed=0, options={"task_id": 1})


# --- hindsight relabelling -----------------------------------------------------------------
def test_goals_are_future_states_of_the_same_episode():
    lengths = np.array([5, 1, 8, 20])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    final = np.repeat(starts + lengths - 1, lengths)
    current = np.arange(lengths.sum())
    rng = np.random.default_rng(0)
    draws = np.stack([sample_goals(rng, current, final, len(current), GoalConfig()) for _ in range(2000)])
    episode = np.repeat(np.arange(len(lengths)), lengths)
    assert np.all(episode[draws] == episode[current])  # never another episode
    last = current == final
    assert np.all(draws[:, last] == current[last])  # the last step has no future: itself
    assert np.all(draws[:, ~last] > current[~last]) and np.all(draws <= final)
    # Uniform over the future steps (OGBench's rounding halves the weight of the two ends).
    i = starts[3]  # first step of the 20-step episode: 19 future steps
    counts = np.bincount(draws[:, i] - i, minlength=20)[1:]
    assert counts[1:-1].min() > 0.6 * counts[1:-1].mean() and abs(counts[0] / counts[1:-1].mean() - 0.5) < 0.25
    # Geometric offsets: nearby goals are the likelier ones.
    geom = sample_goals(rng, np.full(4000, i), np.full(4000, i + 19), 34, GoalConfig(geom_sample=True, discount=0.8))
    assert geom.min() >= i + 1 and np.mean(geom - i) < 6


def test_goal_proportions_follow_the_config():
    lengths = np.full(200, 10)
    starts = np.arange(200) * 10
    final = np.repeat(starts + 9, lengths)
    current = np.repeat(starts + 3, lengths)  # step 3 of every episode: 6 future steps
    config = GoalConfig(p_curgoal=0.2, p_trajgoal=0.5, p_randomgoal=0.3)
    goals = sample_goals(np.random.default_rng(1), current, final, 2000, config)
    same = goals // 10 == current // 10
    assert abs(np.mean(goals == current) - 0.2) < 0.03  # plus the rare random draw of the step itself
    assert abs(np.mean(same & (goals > current)) - 0.5) < 0.04
    assert abs(np.mean(~same) - 0.3 * 199 / 200) < 0.03
    np.testing.assert_array_equal(sample_goals(np.random.default_rng(2), current, final, 2000, GoalConfig(p_curgoal=1.0, p_trajgoal=0.0)), current)


def marked_episodes(lengths=(30, 25, 40, 35), obs_dim=37) -> Episodes:
    """Observations that name their episode (dim 0) and step (dim 1)."""
    rng = np.random.default_rng(0)
    obs = [np.concatenate([np.full((t, 1), e), np.arange(t)[:, None], rng.normal(size=(t, obs_dim - 2))], 1) for e, t in enumerate(lengths)]
    return Episodes.from_lists(obs, [rng.uniform(-1, 1, (t, 5)) for t in lengths])


def test_training_windows_carry_a_relabelled_goal():
    cfg = typed(RobotConfig, {"task": "cube_double", "obs_horizon": 2, "horizon": 4, "val_fraction": 0.25}, "domain")
    domain = RobotDomain(cfg, episodes=marked_episodes())
    assert domain.goal_conditioned and domain.cond_rows == 3
    batches = [b for _, b in zip(range(20), domain.train_data(16, seed=0))]
    for batch in batches:
        assert batch["cond"].shape == (16, 3, 37) and batch["x"].shape == (16, 4, 5)
        raw = domain.obs_normalizer.decode(batch["cond"])
        episode, step = np.round(raw[..., 0]).astype(int), np.round(raw[..., 1]).astype(int)
        assert np.all(episode[:, 2] == episode[:, 1])  # the goal is in the window's episode ...
        lengths = dict(zip(range(4), (30, 25, 40, 35)))
        last = np.array([lengths[e] - 1 for e in episode[:, 1]])
        future = step[:, 2] > step[:, 1]
        assert np.all(future | ((step[:, 1] == last) & (step[:, 2] == last)))  # ... and in its future
    # Resuming at batch 7 draws the same goals.
    resumed = next(domain.train_data(16, seed=0, start_batch=7))
    np.testing.assert_array_equal(resumed["cond"], batches[7]["cond"])
    assert domain.sample_cond(5, seed=0).shape == (5, 3, 37)
    with pytest.raises(ValueError, match="38-D observations, but task cube_double"):
        RobotDomain(cfg, episodes=marked_episodes(obs_dim=38))


# --- end to end ----------------------------------------------------------------------------
def test_cli_trains_and_evaluates_on_the_ogbench_tasks(tmp_path):
    from shortcutlib.run import main

    out = tmp_path / "run"
    common = ["domain.rollout.episodes_per_task=1", "domain.rollout.num_envs=2", "domain.rollout.max_episode_steps=12", "logging.progress=false"]
    status = main(
        [
            "domain=robot",
            "task=cube_double",
            f"domain.data_dir={tmp_path / 'data'}",
            "domain.num_demos=3",
            "domain.ogbench.episode_length=40",
            "domain.horizon=4",
            "domain.action_horizon=2",
            "train.steps=2",
            "train.batch_size=8",
            "train.warmup_steps=0",
            "train.ckpt_every=0",
            "model.hidden=16",
            "model.depth=1",
            "eval.steps=[1]",
            "eval.visualize_steps=[1]",
            *common,
            f"out_dir={out}",
        ]
    )
    assert status == 0
    (folder,) = (tmp_path / "data").iterdir()
    assert folder.name == "cube-double-play-v0-n3-s0-len40"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    metrics = next(r for r in rows if "success@1" in r)
    for suffix in ("", "|noise=0"):
        per_task = [metrics[f"success_task{k}@1{suffix}"] for k in range(1, 6)]
        assert all(0.0 <= v <= 1.0 for v in per_task)
        assert metrics[f"success@1{suffix}"] == pytest.approx(np.mean(per_task))
        assert 1 <= metrics[f"length@1{suffix}"] <= 12
    # The checkpoint alone evaluates again (the cached dataset is reused, not regenerated).
    assert main(["mode=eval", f"ckpt={out}", "eval.steps=[1]", "eval.visualize_steps=[1]", "logging.progress=false"]) == 0


def test_closed_loop_policy_acts_on_goal_observations(datasets):
    from domains.robot.tasks import get_task

    domain = RobotDomain(typed(RobotConfig, {"task": "puzzle_3x3", "source": "ogbench_npz", "path": str(datasets["puzzle-3x3-v0"]), "horizon": 4, "action_horizon": 2}, "domain"))
    calls = []

    def sample_fn(key, num_steps, num_samples, cond=None):
        jax.debug.callback(lambda c: calls.append(np.asarray(c)), cond)  # the policy is one jitted function
        return np.zeros((num_samples, *domain.sample_shape), np.float32)

    policy = domain.policy(sample_fn, steps=1)
    spec = get_task("puzzle_3x3")
    env = spec.make_env(seed=0)
    obs, info = env.reset(seed=0, options=spec.reset_options(0))
    for _ in range(5):
        obs, *_ = env.step(policy.act(obs))
    env.close()
    assert len(calls) == 3 and calls[0].shape == (1, domain.obs_horizon + 1, 55)
    goal = domain.obs_normalizer.encode(info["goal"].astype(np.float32))
    np.testing.assert_allclose(calls[-1][0, -1], goal, atol=1e-5)


def test_evaluation_follows_ogbench_registration():
    import gymnasium
    import ogbench.manipspace  # noqa: F401

    from domains.robot.tasks import TASKS

    tasks = {name: spec for name, spec in TASKS.items() if spec.goal_conditioned}
    assert {spec.ogbench_env for spec in tasks.values()} == set(ENVS)
    for spec in tasks.values():
        assert spec.max_episode_steps == gymnasium.spec(spec.ogbench_env).max_episode_steps  # 200, 500, 750, 500
        assert [spec.reset_options(i)["task_id"] for i in range(7)] == [1, 2, 3, 4, 5, 1, 2]
