"""Diffusion-Policy training windows over episodes, built with index arrays.

For every step ``i`` of every episode the window is the observation history
``obs[i - To + 1 .. i]`` and the action chunk ``act[i .. i + H - 1]``. Histories are padded at
the episode start by repeating its first observation and chunks at the episode end by
repeating its last action, so windows never reach into a neighbouring episode.
"""

from __future__ import annotations

import numpy as np

from domains.robot.datasets.episodes import Episodes


def window_indices(episodes: Episodes, obs_horizon: int, action_horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat step indices of every window: obs (N, obs_horizon) and actions (N, action_horizon)."""
    if obs_horizon < 1 or action_horizon < 1:
        raise ValueError(f"horizons must be >= 1, got obs_horizon={obs_horizon}, action_horizon={action_horizon}.")
    ep = episodes.episode_ids()
    first = episodes.starts[ep][:, None]
    last = episodes.ends[ep][:, None] - 1
    i = np.arange(episodes.num_steps)[:, None]
    obs_idx = np.maximum(i + np.arange(1 - obs_horizon, 1)[None], first)
    act_idx = np.minimum(i + np.arange(action_horizon)[None], last)
    # int32 halves the memory of the index tables kept for large datasets (1M steps x H).
    dtype = np.int32 if episodes.num_steps < 2**31 else np.int64
    return obs_idx.astype(dtype), act_idx.astype(dtype)


def make_windows(episodes: Episodes, obs_horizon: int, action_horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Observation histories (N, To, obs_dim) and action chunks (N, H, action_dim), one per step."""
    obs_idx, act_idx = window_indices(episodes, obs_horizon, action_horizon)
    return episodes.observations[obs_idx], episodes.actions[act_idx]
