"""Closed-loop evaluation of action-chunk policies in MuJoCo.

A policy maps a batch of observation histories ``(N, obs_horizon, obs_dim)`` (flat
observations from ``TaskSpec.obs_fn``, raw scale) to action chunks ``(N, H, action_dim)``
(raw scale). The first ``action_horizon`` actions of every chunk are executed before the
policy is asked again (receding horizon, as in Diffusion Policy); the history starts as
the first observation repeated. ``num_envs`` environments step in lockstep so that one
policy call serves all of them: episodes run in waves of ``num_envs``, and slots whose
episode has ended (or that have no episode in the last wave) are padded so the batch
shape never changes (no recompilation of jitted policies).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domains.robot.tasks import TaskSpec, episode_seed, get_task
from domains.robot.video import ensure_rendering, write_video

Policy = Callable[[np.ndarray], Any]
EVAL_STREAM = 1  # seed stream of evaluation episodes (collection uses 0)


class _Slot:
    """One environment of the batch and the episode it is running."""

    def __init__(self, env: Any, spec: TaskSpec, obs_horizon: int, max_steps: int | None = None):
        self.env, self.spec, self.obs_horizon, self.max_steps = env, spec, obs_horizon, max_steps
        self.active = False
        self.history: np.ndarray | None = None

    def start(self, seed: int, options: dict[str, Any] | None) -> None:
        obs, info = self.env.reset(seed=seed, options=options)
        self.history = np.repeat(self.spec.obs_fn(obs)[None], self.obs_horizon, axis=0)
        self.active, self.ret, self.length, self.success = True, 0.0, 0, False

    def step(self, action: np.ndarray) -> None:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.history = np.concatenate([self.history[1:], self.spec.obs_fn(obs)[None]], axis=0)
        self.ret += float(reward)
        self.length += 1
        if terminated or truncated or (self.max_steps is not None and self.length >= self.max_steps):
            self.active = False
            self.success = self.spec.success_fn(info, obs, self.env)


def evaluate_policy(
    task: str,
    policy: Policy,
    num_episodes: int,
    *,
    obs_horizon: int,
    action_horizon: int,
    seed: int,
    num_envs: int = 1,
    record_video: Path | None = None,
    video_fps: int = 20,
    max_episode_steps: int | None = None,
    envs: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``policy`` on ``task`` and return its metrics.

    Returns success_rate, mean_return, mean_length (steps per episode), policy_latency_ms
    (mean wall time of one policy call on the whole batch, measured after one untimed
    warm-up call so jit compilation is excluded), num_episodes, num_policy_calls, and
    video_path (str) when ``record_video`` is a '.gif' or '.mp4' path: the first episode,
    rendered from the first environment. Actions are clipped to the action space;
    ``max_episode_steps`` ends episodes earlier than the task's time limit. ``envs`` are
    environments of the task to run on, left open for the next call (building OGBench's costs a
    model compilation each); by default ``num_envs`` are built and closed here. When the
    episodes' reset options name evaluation tasks (``task_id``), task_success maps each task
    to its success rate.
    """
    if num_episodes < 1 or num_envs < 1 or obs_horizon < 1 or action_horizon < 1:
        raise ValueError("num_episodes, num_envs, obs_horizon and action_horizon must all be >= 1.")
    spec = get_task(task)
    if record_video is not None:
        ensure_rendering()
        if envs is not None:
            raise ValueError("record_video needs environments built here (with rendering): pass envs=None.")
    owned = envs is None
    if owned:
        envs = [
            spec.make_env(render_mode="rgb_array" if record_video is not None and i == 0 else None, seed=seed + i)
            for i in range(min(num_envs, num_episodes))
        ]
    envs = list(envs)[:num_episodes]
    low, high = envs[0].action_space.low, envs[0].action_space.high
    slots = [_Slot(env, spec, obs_horizon, max_episode_steps) for env in envs]
    episodes: list[tuple[float, int, bool]] = []
    task_ids: list[Any] = []
    latencies: list[float] = []
    frames: list[np.ndarray] = []
    warmed_up = False
    try:
        for first in range(0, num_episodes, num_envs):
            wave = range(first, min(first + num_envs, num_episodes))
            for slot, episode in zip(slots, wave):
                slot.start(episode_seed(seed, EVAL_STREAM, episode), spec.reset_options(episode))
            filming = record_video is not None and first == 0
            if filming:
                frames.append(slots[0].env.render())
            while any(s.active for s in slots):
                # Slots without a running episode repeat the first one's history.
                batch = np.stack([(s.history if s.active else slots[0].history) for s in slots]).astype(np.float32)
                if not warmed_up:
                    np.asarray(policy(batch))
                    warmed_up = True
                start = time.perf_counter()
                chunks = np.asarray(policy(batch))  # np.asarray waits for asynchronous (JAX) results
                latencies.append(time.perf_counter() - start)
                _check_chunks(chunks, len(slots), action_horizon, low.shape[0])
                for k in range(action_horizon):
                    for i, slot in enumerate(slots):
                        if slot.active:
                            slot.step(np.clip(chunks[i, k], low, high).astype(low.dtype))
                            if filming and i == 0:
                                frames.append(slot.env.render())
                    filming = filming and slots[0].active
                    if not any(s.active for s in slots):
                        break
            episodes.extend((s.ret, s.length, s.success) for s, _ in zip(slots, wave))
            task_ids.extend((spec.reset_options(episode) or {}).get("task_id") for episode in wave)
    finally:
        if owned:
            for env in envs:
                env.close()

    returns, lengths, successes = (np.array(x, dtype=np.float64) for x in zip(*episodes))
    metrics: dict[str, Any] = {
        "success_rate": float(successes.mean()),
        "mean_return": float(returns.mean()),
        "mean_length": float(lengths.mean()),
        "policy_latency_ms": 1000.0 * float(np.mean(latencies)),
        "num_episodes": len(episodes),
        "num_policy_calls": len(latencies),
    }
    if all(t is not None for t in task_ids):
        metrics["task_success"] = {
            int(t): float(np.mean([ok for ok, u in zip(successes, task_ids) if u == t])) for t in sorted(set(task_ids))
        }
    if record_video is not None:
        metrics["video_path"] = str(write_video(frames, Path(record_video), fps=video_fps))
    return metrics


def _check_chunks(chunks: np.ndarray, batch: int, action_horizon: int, action_dim: int) -> None:
    ok = chunks.ndim == 3 and chunks.shape[0] == batch and chunks.shape[2] == action_dim
    if not ok or chunks.shape[1] < action_horizon:
        raise ValueError(
            f"The policy must return action chunks of shape (N={batch}, H>={action_horizon}, {action_dim}); "
            f"got {chunks.shape}."
        )


def random_chunk_policy(task: str, horizon: int, seed: int = 0) -> Policy:
    """Uniformly random action chunks: the floor every learned policy should clear."""
    env = get_task(task).make_env()
    space = env.action_space
    env.close()
    rng = np.random.default_rng(seed)

    def policy(obs_history: np.ndarray) -> np.ndarray:
        shape = (obs_history.shape[0], horizon, space.shape[0])
        return rng.uniform(space.low, space.high, size=shape).astype(np.float32)

    return policy
