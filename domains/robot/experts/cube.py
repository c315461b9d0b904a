"""Cube expert: OGBench's own scripted oracles for its cube tasks.

OGBench generates its cube datasets with ``CubePlanOracle`` ('play' data: a noisy
keyframe plan of pick, carry and place, tracked step by step) or ``CubeMarkovOracle``
('noisy' data: closed-loop phase logic). Both are driven as OGBench's data generation
script drives them: ``oracle.reset(ob, info)`` at episode start, then
``oracle.select_action(ob, info)`` every step, with the action clipped to [-1, 1]; the
Markov oracle gets that script's per-episode Gaussian action noise as well.

The oracles read the target block from privileged info keys that OGBench's environment
only emits in its 'data_collection' mode. In 'task' mode (the evaluation goals) the
target is the goal mocap body of the single cube, so those keys are filled in from the
simulator state here. The oracles draw their randomness from NumPy's global generator;
it is seeded from this expert's generator at every reset so demonstrations are
reproducible.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

Oracle = Literal["plan", "markov"]


def oracle_info(env: Any, info: dict[str, Any]) -> dict[str, Any]:
    """OGBench's reset/step info plus the privileged target-block keys its oracles read."""
    from ogbench.manipspace import lie

    base = env.unwrapped
    info = dict(info)
    mocap_id = base._cube_target_mocap_ids[0]
    info["privileged/target_task"] = "cube"
    info["privileged/target_block"] = 0
    info["privileged/target_block_pos"] = base._data.mocap_pos[mocap_id].copy()
    info["privileged/target_block_yaw"] = np.array([lie.SO3(wxyz=base._data.mocap_quat[mocap_id]).compute_yaw_radians()])
    return info


class CubeExpert:
    """OGBench's cube oracle: 'markov' (default; closed loop, as in its noisy datasets) or
    'plan' (as in its play datasets; open-loop timing, fails some diagonal tasks)."""

    def __init__(
        self,
        env: Any,
        rng: np.random.Generator,
        oracle: Oracle = "markov",
        noise: float = 0.1,
        noise_smoothing: float = 0.5,
        min_norm: float = 0.4,
    ):
        from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

        if oracle == "plan":
            self._oracle = CubePlanOracle(env=env, noise=noise, noise_smoothing=noise_smoothing)
        elif oracle == "markov":
            self._oracle = CubeMarkovOracle(env=env, min_norm=min_norm)
        else:
            raise ValueError(f"oracle must be 'plan' or 'markov', got {oracle!r}.")
        self._env = env
        self._rng = rng
        self._markov = oracle == "markov"
        self._noise = noise
        self._xi = 0.0

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        np.random.seed(int(self._rng.integers(2**32)))
        if self._markov:
            self._xi = np.random.uniform(0, self._noise)  # per-episode noise level, as OGBench does
        self._oracle.reset(obs, oracle_info(self._env, info))

    def act(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        action = np.asarray(self._oracle.select_action(obs, oracle_info(self._env, info)), dtype=np.float64)
        if self._markov:
            xi = self._xi
            action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
