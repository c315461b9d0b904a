"""Scripted-expert demonstrations, written as a Minari dataset and a D4RL-style HDF5 file.

``collect(task, num_episodes, out_dir, ...)`` rolls out a task's scripted expert (see
``experts``); the command line is ``python -m domains.robot.collect task=...``.
``action_noise`` perturbs the executed actions (the recorded ones stay the expert's, see
``run_expert_episode``).

Both files hold the flat observation of ``TaskSpec.obs_fn``:

* ``<out_dir>/minari/`` is a Minari datasets root holding ``shortcutlib/<task>/expert-v0``
  (load with ``MINARI_DATASETS_PATH=<out_dir>/minari`` and ``minari.load_dataset``);
  every episode keeps its final observation and ``infos['success']`` (T+1 entries).
* ``<out_dir>/<task>_expert.hdf5`` has one row per step: observations, actions, rewards,
  next_observations, terminals, timeouts and infos/success (the success test after the
  step). Every episode ends with a row where terminals or timeouts is set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domains.robot.tasks import TaskSpec, episode_seed, get_task

COLLECT_STREAM = 0  # seed stream of collected episodes (evaluation uses 1)


@dataclass
class Episode:
    observations: np.ndarray  # (T + 1, obs_dim), the last one after the final action
    actions: np.ndarray  # (T, action_dim)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    successes: np.ndarray  # (T + 1,) bool: at reset, then after every step
    seed: int
    options: dict[str, Any] | None

    @property
    def success(self) -> bool:
        return bool(self.successes[-1])


def run_expert_episode(
    spec: TaskSpec,
    env: Any,
    expert: Any,
    seed: int,
    options: dict[str, Any] | None,
    action_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Episode:
    """One expert episode. With ``action_noise`` > 0 the executed action is the expert's plus
    Gaussian noise of that standard deviation (clipped to the action box) while the recorded
    action stays the expert's own: the demonstrations then visit states off the expert's path
    together with the expert's correction from them (DART, Laskey et al. 2017), which a cloned
    policy needs because its own small errors take it there."""
    if action_noise > 0 and rng is None:
        raise ValueError("run_expert_episode needs an rng when action_noise > 0.")
    low, high = env.action_space.low, env.action_space.high
    obs, info = env.reset(seed=seed, options=options)
    expert.reset(obs, info)
    observations, successes = [spec.obs_fn(obs)], [spec.success_fn(info, obs, env)]
    actions, rewards, terminations, truncations = [], [], [], []
    done = False
    while not done:
        action = np.asarray(expert.act(obs, info), dtype=np.float32)
        executed = action
        if action_noise > 0:
            executed = np.clip(action + action_noise * rng.standard_normal(action.shape), low, high).astype(action.dtype)
        obs, reward, terminated, truncated, info = env.step(executed)
        done = terminated or truncated
        observations.append(spec.obs_fn(obs))
        successes.append(spec.success_fn(info, obs, env))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
    return Episode(
        observations=np.stack(observations).astype(np.float32),
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
        successes=np.asarray(successes),
        seed=seed,
        options=options,
    )


def write_hdf5(episodes: list[Episode], path: Path, attrs: dict[str, Any]) -> Path:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate([e.observations[:-1] for e in episodes])
        f["next_observations"] = np.concatenate([e.observations[1:] for e in episodes])
        f["actions"] = np.concatenate([e.actions for e in episodes])
        f["rewards"] = np.concatenate([e.rewards for e in episodes])
        f["terminals"] = np.concatenate([e.terminations for e in episodes])
        # Every episode ends with terminals or timeouts, even one cut short by another reason.
        f["timeouts"] = np.concatenate([e.truncations | _last_step(e) & ~e.terminations for e in episodes])
        f["infos/success"] = np.concatenate([e.successes[1:] for e in episodes])
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def _last_step(e: Episode) -> np.ndarray:
    last = np.zeros(len(e.actions), dtype=bool)
    last[-1] = True
    return last


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[Path]:
    """Point Minari at ``path`` (MINARI_DATASETS_PATH) for the duration of the block."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def minari_dataset_id(task: str) -> str:
    return f"shortcutlib/{task}/expert-v0"


def write_minari(episodes: list[Episode], root: Path, task: str, env: Any, description: str) -> str:
    """Write the episodes as a Minari dataset under ``root``, replacing an older one; returns its id."""
    import gymnasium
    import minari
    from minari.data_collector import EpisodeBuffer

    dataset_id = minari_dataset_id(task)
    obs_dim = episodes[0].observations.shape[1]
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=e.seed,
            options=e.options,
            observations=e.observations,
            actions=e.actions,
            rewards=e.rewards,
            terminations=e.terminations,
            truncations=e.truncations,
            infos={"success": e.successes},
        )
        for i, e in enumerate(episodes)
    ]
    with minari_root(root), warnings.catch_warnings():
        # Minari warns about unset authorship metadata; it is optional for local datasets.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\.")
        shutil.rmtree(root / dataset_id, ignore_errors=True)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env,  # its spec (id, kwargs, time limit, wrappers) is stored
            eval_env=env.spec,
            observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            action_space=env.action_space,
            algorithm_name="scripted-expert",
            author="shortcutlib",
            description=description,
        )
    return dataset_id


def collect(
    task: str,
    num_episodes: int,
    out_dir: Path,
    seed: int = 0,
    progress: bool = True,
    action_noise: float = 0.0,
    **expert_kwargs: Any,
) -> dict[str, Any]:
    """Roll out the task's scripted expert for ``num_episodes`` episodes and write both datasets.

    ``action_noise`` perturbs the executed actions, not the recorded ones (see
    ``run_expert_episode``); the success rate is that of the perturbed expert.

    Returns hdf5 (Path), minari_root (Path, the MINARI_DATASETS_PATH to load from),
    minari_id, success_rate, num_episodes, num_steps, mean_return, mean_length, seconds.
    """
    from tqdm import tqdm

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}.")
    spec = get_task(task)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    env = spec.make_env(seed=seed)
    expert = spec.make_expert(env, np.random.default_rng(seed), **expert_kwargs)
    noise_rng = np.random.default_rng([seed, 1])  # apart from the expert's own draws
    episodes = []
    try:
        for episode in tqdm(range(num_episodes), desc=f"collect {task}", disable=not progress):
            seed_i = episode_seed(seed, COLLECT_STREAM, episode)
            options = spec.reset_options(episode)
            episodes.append(run_expert_episode(spec, env, expert, seed_i, options, action_noise, noise_rng))
        attrs = {"task": task, "env_id": spec.env_id, "seed": seed, "num_episodes": num_episodes, "action_noise": action_noise}
        attrs.update({f"expert_{k}": str(v) for k, v in expert_kwargs.items()})
        hdf5 = write_hdf5(episodes, out_dir / f"{task}_expert.hdf5", attrs)
        root = out_dir / "minari"
        description = (
            f"Scripted expert, {spec.description} Expert kwargs {expert_kwargs}, seed {seed}, "
            f"executed-action noise std {action_noise} (recorded actions are the expert's)."
        )
        dataset_id = write_minari(episodes, root, task, env, description)
    finally:
        env.close()
    return {
        "hdf5": hdf5,
        "minari_root": root,
        "minari_id": dataset_id,
        "success_rate": float(np.mean([e.success for e in episodes])),
        "num_episodes": num_episodes,
        "num_steps": int(sum(len(e.actions) for e in episodes)),
        "mean_return": float(np.mean([e.rewards.sum() for e in episodes])),
        "mean_length": float(np.mean([len(e.actions) for e in episodes])),
        "seconds": time.perf_counter() - start,
    }
