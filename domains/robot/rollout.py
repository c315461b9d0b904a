"""Closed-loop evaluation of action-chunk policies in MuJoCo.

The policy is a ``domains.robot.policy.RecedingHorizonPolicy``, the object users drive their own
environments with: it keeps the observation window and the action queue. ``num_envs``
environments step in lockstep so that one policy call serves all of them: episodes run in waves
of ``num_envs``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domains.robot.policy import RecedingHorizonPolicy
from domains.robot.tasks import TaskSpec, episode_seed, get_task
from domains.robot.video import ensure_rendering, write_video

EVAL_STREAM = 1  # seed stream of evaluation episodes (collection uses 0)


class _Slot:
    """One environment of the batch and the episode it is running."""

    def __init__(self, env: Any, spec: TaskSpec, max_steps: int | None = None):
        self.env, self.spec, self.max_steps = env, spec, max_steps
        self.active = False
        self.observation: Any = None

    def start(self, seed: int, options: dict[str, Any] | None) -> None:
        self.observation, info = self.env.reset(seed=seed, options=options)
        self.active, self.ret, self.length, self.success = True, 0.0, 0, False

    def step(self, action: np.ndarray) -> None:
        self.observation, reward, terminated, truncated, info = self.env.step(action)
        self.ret += float(reward)
        self.length += 1
        if terminated or truncated or (self.max_steps is not None and self.length >= self.max_steps):
            self.active = False
            self.success = self.spec.success_fn(info, self.observation, self.env)


def evaluate_policy(
    task: str,
    policy: RecedingHorizonPolicy,
    num_episodes: int,
    *,
    seed: int,
    num_envs: int = 1,
    record_video: Path | None = None,
    video_fps: int = 20,
    max_episode_steps: int | None = None,
    envs: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``policy`` on ``task`` and return its metrics.

    The ``num_envs`` environments step in lockstep, one ``policy.act`` call for all of them per
    step (the policy re-plans every ``action_horizon`` steps); a slot whose episode has ended
    keeps feeding its last observation so the batch shape never changes. Returns success_rate,
    mean_return, mean_length (steps per episode), policy_latency_ms (mean wall time of a call
    that sampled a chunk for the whole batch, the first one, which compiles, excluded),
    num_episodes, num_policy_calls, and video_path (str) when ``record_video`` is a '.gif' or
    '.mp4' path: the first episode, rendered from the first environment. Actions are clipped to
    the action space; ``max_episode_steps`` ends episodes earlier than the task's time limit.
    ``envs`` are environments of the task to run on, left open for the next call (building
    OGBench's costs a model compilation each); by default they are built and closed here. When
    the episodes' reset options name evaluation tasks (``task_id``), task_success maps each task
    to its success rate.
    """
    if num_episodes < 1 or num_envs < 1:
        raise ValueError("num_episodes and num_envs must both be >= 1.")
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
    num_envs = len(envs)
    low, high = envs[0].action_space.low, envs[0].action_space.high
    slots = [_Slot(env, spec, max_episode_steps) for env in envs]
    episodes: list[tuple[float, int, bool]] = []
    task_ids: list[Any] = []
    latencies: list[float] = []
    frames: list[np.ndarray] = []
    try:
        for first in range(0, num_episodes, num_envs):
            wave = range(first, min(first + num_envs, num_episodes))
            policy.reset()
            for slot, episode in zip(slots, wave):
                slot.start(episode_seed(seed, EVAL_STREAM, episode), spec.reset_options(episode))
            live = slots[: len(wave)]
            filming = record_video is not None and first == 0
            if filming:
                frames.append(slots[0].env.render())
            while any(s.active for s in live):
                start = time.perf_counter()
                # A short last wave is padded, so a jitted policy sees one batch shape.
                padding = [live[0].observation] * (num_envs - len(live))
                actions = np.asarray(policy.act([s.observation for s in live] + padding))
                if policy.planned:
                    latencies.append(time.perf_counter() - start)
                for i, slot in enumerate(live):
                    if slot.active:
                        slot.step(np.clip(actions[i], low, high).astype(low.dtype))
                        if filming and i == 0:
                            frames.append(slot.env.render())
                filming = filming and slots[0].active
            episodes.extend((s.ret, s.length, s.success) for s in live)
            task_ids.extend((spec.reset_options(episode) or {}).get("task_id") for episode in wave)
    finally:
        if owned:
            for env in envs:
                env.close()

    returns, lengths, successes = (np.array(x, dtype=np.float64) for x in zip(*episodes))
    timed = latencies[1:] or latencies
    metrics: dict[str, Any] = {
        "success_rate": float(successes.mean()),
        "mean_return": float(returns.mean()),
        "mean_length": float(lengths.mean()),
        "policy_latency_ms": 1000.0 * float(np.mean(timed)),
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


def random_chunk_policy(task: str, horizon: int, action_horizon: int, seed: int = 0) -> RecedingHorizonPolicy:
    """Uniformly random action chunks: the floor every learned policy should clear."""
    spec = get_task(task)
    env = spec.make_env()
    space = env.action_space
    row_dim = len(spec.obs_fn(env.reset(seed=0)[0]))
    env.close()
    rng = np.random.default_rng(seed)

    def chunks(obs_history: np.ndarray) -> np.ndarray:
        shape = (obs_history.shape[0], horizon, space.shape[0])
        return rng.uniform(space.low, space.high, size=shape).astype(np.float32)

    return RecedingHorizonPolicy(chunks, spec.obs_fn, 1, action_horizon, row_dim)
