"""Closed-loop chunk policies: the observation window and the action queue around a chunk function.

A chunk function maps observation histories (N, obs_horizon, row) to action chunks (N, H, A),
both in raw (environment) units; for a trained model it is one jitted function, normalise ->
sample -> denormalise (``RobotDomain.make_policy``). ``RecedingHorizonPolicy`` runs it the way
Diffusion Policy does: the history starts as the first observation repeated, the first
``action_horizon`` actions of a chunk are executed, then a new chunk is sampled. Evaluation
rollouts and users driving their own environment go through this same object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ChunkFn = Callable[[np.ndarray], np.ndarray]


class RecedingHorizonPolicy:
    """``reset()``, then ``act(observation)`` every environment step.

    ``observation`` is what the environment returns (a dict for goal-conditioned tasks), or a
    list of them for environments stepped in lockstep; ``act`` returns one action (A,) or a batch
    (N, A) accordingly. ``planned`` says whether the last call sampled a new chunk.
    """

    def __init__(self, chunk_fn: ChunkFn, obs_fn: Callable[[Any], np.ndarray], obs_horizon: int, action_horizon: int, row_dim: int):
        if obs_horizon < 1 or action_horizon < 1:
            raise ValueError(f"obs_horizon ({obs_horizon}) and action_horizon ({action_horizon}) must be at least 1.")
        self.chunk_fn, self.obs_fn = chunk_fn, obs_fn
        self.obs_horizon, self.action_horizon, self.row_dim = obs_horizon, action_horizon, row_dim
        self.reset()

    def reset(self) -> None:
        self._history: np.ndarray | None = None
        self._queue: np.ndarray | None = None
        self._next = 0
        self.planned = False

    def _rows(self, observations: Sequence[Any]) -> np.ndarray:
        rows = np.stack([np.asarray(self.obs_fn(o), np.float32).reshape(-1) for o in observations])
        if rows.shape[1] != self.row_dim:
            raise ValueError(f"observation of dimension {rows.shape[1]}; this policy takes the task's observations, "
                             f"{self.row_dim} values each (flattened as the task does).")
        return rows

    def act(self, observation: Any) -> np.ndarray:
        batch = isinstance(observation, (list, tuple)) or (isinstance(observation, np.ndarray) and observation.ndim == 2)
        rows = self._rows(list(observation) if batch else [observation])
        if self._history is None or len(self._history) != len(rows):
            self._history = np.repeat(rows[:, None], self.obs_horizon, axis=1)
            self._queue = None
        else:
            self._history = np.concatenate([self._history[:, 1:], rows[:, None]], axis=1)
        self.planned = self._queue is None or self._next >= self.action_horizon
        if self.planned:
            chunks = np.asarray(self.chunk_fn(self._history))
            if chunks.ndim != 3 or chunks.shape[0] != len(rows) or chunks.shape[1] < self.action_horizon:
                raise ValueError(f"the chunk function must return (N={len(rows)}, H>={self.action_horizon}, A) chunks; got {chunks.shape}.")
            self._queue, self._next = chunks[:, : self.action_horizon], 0
        action = self._queue[:, self._next]
        self._next += 1
        return action if batch else action[0]
