"""``Episodes``: flat per-step arrays of many episodes plus their boundaries.

Every reader (Minari, D4RL HDF5, OGBench npz) returns this one container, so chunking,
normalisation and splitting never need to know where the data came from. Step ``i`` holds
the observation the policy saw and the action it took there; a final observation with no
action (Minari's ``T + 1``-th, OGBench's dummy last row) is dropped by the readers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)  # arrays: compare fields explicitly
class Episodes:
    """Concatenated episodes.

    observations: (N, obs_dim) float32; actions: (N, action_dim) float32;
    starts: (E,) int64 index of each episode's first step (``starts[0] == 0``, increasing);
    rewards: optional (N,) float32; success: optional (E,) bool, one flag per episode.
    """

    observations: np.ndarray
    actions: np.ndarray
    starts: np.ndarray
    rewards: np.ndarray | None = None
    success: np.ndarray | None = None

    def __post_init__(self) -> None:
        obs = np.asarray(self.observations, np.float32)
        act = np.asarray(self.actions, np.float32)
        starts = np.asarray(self.starts, np.int64).reshape(-1)
        if obs.ndim == 1:
            obs = obs[:, None]
        if act.ndim == 1:
            act = act[:, None]
        if obs.ndim != 2 or act.ndim != 2:
            raise ValueError(f"observations and actions must be (N, dim); got {obs.shape} and {act.shape}.")
        n = len(obs)
        if len(act) != n:
            raise ValueError(f"{n} observations but {len(act)} actions; every step needs both.")
        if n == 0 or len(starts) == 0:
            raise ValueError("no steps: the dataset is empty.")
        if starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n:
            raise ValueError(
                f"episode starts must begin at 0 and increase strictly below {n} (no empty episodes); "
                f"got {starts[:10]}..."
            )
        object.__setattr__(self, "observations", obs)
        object.__setattr__(self, "actions", act)
        object.__setattr__(self, "starts", starts)
        if self.rewards is not None:
            rewards = np.asarray(self.rewards, np.float32).reshape(-1)
            if len(rewards) != n:
                raise ValueError(f"{len(rewards)} rewards for {n} steps.")
            object.__setattr__(self, "rewards", rewards)
        if self.success is not None:
            success = np.asarray(self.success, bool).reshape(-1)
            if len(success) != len(starts):
                raise ValueError(f"{len(success)} success flags for {len(starts)} episodes.")
            object.__setattr__(self, "success", success)

    # --- shape --------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.observations)

    @property
    def num_episodes(self) -> int:
        return len(self.starts)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def ends(self) -> np.ndarray:
        """(E,) exclusive end index of each episode."""
        return np.append(self.starts[1:], self.num_steps)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def episode_ids(self) -> np.ndarray:
        """(N,) index of the episode each step belongs to."""
        return np.repeat(np.arange(self.num_episodes), self.lengths)

    def episode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Observations and actions of episode ``i``."""
        s, e = self.starts[i], self.ends[i]
        return self.observations[s:e], self.actions[s:e]

    # --- building -----------------------------------------------------------------------
    @classmethod
    def from_lists(
        cls,
        observations: Sequence[np.ndarray],
        actions: Sequence[np.ndarray],
        rewards: Sequence[np.ndarray] | None = None,
        success: Sequence[bool] | np.ndarray | None = None,
    ) -> Episodes:
        """One array per episode for observations, actions (and rewards)."""
        if len(observations) != len(actions):
            raise ValueError(f"{len(observations)} observation arrays but {len(actions)} action arrays.")
        lengths = np.array([len(a) for a in actions], np.int64)
        return cls(
            observations=np.concatenate(observations),
            actions=np.concatenate(actions),
            starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
            rewards=None if rewards is None else np.concatenate(rewards),
            success=success,
        )

    @classmethod
    def from_boundaries(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        ends: np.ndarray,
        rewards: np.ndarray | None = None,
        step_success: np.ndarray | None = None,
    ) -> Episodes:
        """From per-step arrays and a per-step flag that is true on each episode's last step.

        Steps after the last flagged one form a final (cut-off) episode. ``step_success``
        per step becomes one flag per episode: success anywhere in the episode.
        """
        ends = np.asarray(ends, bool).reshape(-1)
        n = len(ends)
        starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
        success = None
        if step_success is not None:
            success = np.logical_or.reduceat(np.asarray(step_success, bool).reshape(n), starts)
        return cls(observations, actions, starts, rewards, success)

    @classmethod
    def concatenate(cls, parts: Sequence[Episodes]) -> Episodes:
        """Episodes of several datasets, one after another (optional fields kept if all have them)."""
        if not parts:
            raise ValueError("nothing to concatenate.")
        offsets = np.cumsum([0] + [p.num_steps for p in parts[:-1]])
        rewards = None if any(p.rewards is None for p in parts) else np.concatenate([p.rewards for p in parts])
        success = None if any(p.success is None for p in parts) else np.concatenate([p.success for p in parts])
        return cls(
            observations=np.concatenate([p.observations for p in parts]),
            actions=np.concatenate([p.actions for p in parts]),
            starts=np.concatenate([p.starts + o for p, o in zip(parts, offsets)]),
            rewards=rewards,
            success=success,
        )

    def select(self, episode_indices: Sequence[int] | np.ndarray) -> Episodes:
        """The given episodes, in the given order."""
        idx = np.asarray(episode_indices, np.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError("select needs at least one episode.")
        lengths = self.lengths[idx]
        # Step indices of the chosen episodes, concatenated, without a loop over episodes.
        new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        steps = np.repeat(self.starts[idx] - new_starts, lengths) + np.arange(lengths.sum())
        return Episodes(
            observations=self.observations[steps],
            actions=self.actions[steps],
            starts=new_starts,
            rewards=None if self.rewards is None else self.rewards[steps],
            success=None if self.success is None else self.success[idx],
        )

    def __repr__(self) -> str:
        return (
            f"Episodes(episodes={self.num_episodes}, steps={self.num_steps}, "
            f"obs_dim={self.obs_dim}, action_dim={self.action_dim})"
        )


DEFAULT_OBS_KEYS = ("observation", "desired_goal")


def flatten_observations(obs: np.ndarray | Mapping[str, np.ndarray], keys: Sequence[str] | None = None) -> np.ndarray:
    """(T, obs_dim) float32 from an array or a dict of arrays (goal-conditioned spaces).

    Dicts are concatenated along the last axis in the order of ``keys``; by default
    ``observation`` then ``desired_goal`` (whichever exist; ``achieved_goal`` is already a
    part of ``observation`` in the gymnasium-robotics tasks), or every key in sorted order
    when there is no ``observation`` key.
    """
    if not isinstance(obs, Mapping):
        arr = np.asarray(obs, np.float32)
        return arr.reshape(len(arr), -1)
    if keys is None:
        keys = [k for k in DEFAULT_OBS_KEYS if k in obs] if "observation" in obs else sorted(obs)
    missing = [k for k in keys if k not in obs]
    if missing:
        raise KeyError(f"observation keys {missing} not in the dataset; it has {sorted(obs)}.")
    parts = [np.asarray(obs[k], np.float32) for k in keys]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=-1)


def split_episodes(episodes: Episodes, val_fraction: float, seed: int) -> tuple[Episodes, Episodes | None]:
    """Train and validation sets made of whole episodes, chosen by ``seed``.

    ``round(val_fraction * E)`` episodes (at least one when the fraction is positive) go to
    validation, always leaving one for training; returns ``(train, None)`` when the fraction
    is 0. Episodes keep their original order inside each split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    e = episodes.num_episodes
    n_val = 0 if val_fraction == 0 else min(max(1, round(val_fraction * e)), e - 1)
    if n_val == 0:
        if val_fraction > 0:
            raise ValueError(f"val_fraction={val_fraction} needs at least 2 episodes; the dataset has {e}.")
        return episodes, None
    order = np.random.default_rng(seed).permutation(e)
    val_idx = np.sort(order[:n_val])
    train_idx = np.sort(order[n_val:])
    return episodes.select(train_idx), episodes.select(val_idx)
