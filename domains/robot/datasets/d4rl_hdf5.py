"""D4RL-layout HDF5 files read directly with h5py.

The ``d4rl`` package itself cannot be installed here: it needs ``mujoco-py`` and the
MuJoCo 2.1 binaries, neither of which works with the ``mujoco`` 3.x Python bindings this
project uses. Its dataset files are plain HDF5, so they are read without it.

Layout (one row per transition, episodes one after another)::

    observations  (N, obs_dim)    or a group of arrays (flattened like Minari dict spaces)
    actions       (N, action_dim)
    rewards       (N,)
    terminals     (N,)  1 where the episode ended in a terminal state
    timeouts      (N,)  1 where the episode was cut off by the time limit
    infos/*       (N, ...) per-step extras, e.g. infos/goal (maze2d), infos/success

An episode ends on every step where ``terminals | timeouts``; steps after the last such
flag form a final episode. ``next_observations`` is ignored (windows use only observations).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from domains.robot.datasets.episodes import Episodes, flatten_observations


def _read_observations(f, obs_keys: Sequence[str] | None) -> np.ndarray:
    import h5py

    node = f["observations"]
    if isinstance(node, h5py.Group):
        return flatten_observations({k: node[k][()] for k in node.keys()}, obs_keys)
    return flatten_observations(node[()])


def read_d4rl_hdf5(
    path: str | Path,
    *,
    obs_keys: Sequence[str] | None = None,
    extra_obs: Sequence[str] = (),
    max_episodes: int | None = None,
) -> Episodes:
    """Read a D4RL-style HDF5 file into ``Episodes``.

    ``obs_keys`` orders the arrays of a grouped ``observations``; ``extra_obs`` lists further
    datasets appended to every observation (e.g. ``("infos/goal",)`` to make maze2d
    goal-conditioned). ``max_episodes`` keeps only the first episodes.
    """
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no HDF5 file at {path}. Create one with `python -m domains.robot.collect task=... out_dir=...` "
            "or copy a D4RL dataset file there."
        )
    with h5py.File(path, "r") as f:
        missing = [k for k in ("observations", "actions") if k not in f]
        if missing:
            raise KeyError(
                f"{path} lacks {missing}; a D4RL file has observations, actions, rewards, terminals, timeouts."
            )
        obs = _read_observations(f, obs_keys)
        n = len(obs)
        extras = [np.asarray(f[k][()], np.float32).reshape(n, -1) for k in extra_obs]
        if extras:
            obs = np.concatenate([obs, *extras], axis=-1)
        actions = np.asarray(f["actions"][()], np.float32)
        flags = [np.asarray(f[k][()], bool).reshape(n) for k in ("terminals", "timeouts") if k in f]
        if not flags:
            raise KeyError(f"{path} has neither terminals nor timeouts: episode boundaries are unknown.")
        ends = np.logical_or.reduce(flags)
        rewards = np.asarray(f["rewards"][()], np.float32) if "rewards" in f else None
        success = f["infos/success"][()] if "infos/success" in f else None
    episodes = Episodes.from_boundaries(obs, actions, ends, rewards, success)
    if max_episodes is not None and max_episodes < episodes.num_episodes:
        episodes = episodes.select(np.arange(max_episodes))
    return episodes
