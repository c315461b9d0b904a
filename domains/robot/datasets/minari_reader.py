"""Minari datasets from a local root, never downloaded.

Datasets are looked up by id (``mujoco/halfcheetah/expert-v0``, ``D4RL/pointmaze/large-v2``)
under ``root`` if given, else ``$MINARI_DATASETS_PATH``, else Minari's default
``~/.minari/datasets``. Minari stores ``T + 1`` observations per episode of ``T`` actions;
the final observation (no action) is dropped. Dict observations are flattened to
``observation`` then ``desired_goal`` (see ``flatten_observations``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from domains.robot.datasets.episodes import Episodes, flatten_observations


@contextlib.contextmanager
def _datasets_root(root: str | Path | None) -> Iterator[Path]:
    """Point Minari at ``root`` for the duration of the block (it reads the env var per call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(root).expanduser())
    try:
        resolved = os.environ.get("MINARI_DATASETS_PATH")
        yield Path(resolved) if resolved else Path.home() / ".minari" / "datasets"
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def _episode_success(infos: dict) -> bool | None:
    """Success anywhere in the episode, from a per-step ``success`` info, if recorded."""
    value = infos.get("success") if isinstance(infos, dict) else None
    return None if value is None else bool(np.any(np.asarray(value, bool)))


def read_minari(
    dataset_id: str,
    root: str | Path | None = None,
    *,
    obs_keys: Sequence[str] | None = None,
    max_episodes: int | None = None,
) -> Episodes:
    """Read a local Minari dataset into ``Episodes``; raises FileNotFoundError when absent."""
    import minari

    with _datasets_root(root) as base:
        data_path = base / dataset_id / "data"
        if not data_path.exists():
            raise FileNotFoundError(
                f"Minari dataset {dataset_id!r} not found at {data_path} (root: {base}; set MINARI_DATASETS_PATH "
                "or pass root). Nothing is downloaded at run time: create it locally with "
                "`python -m domains.robot.collect task=<task> num_episodes=<n> out_dir=<dir>`, or run "
                f"`minari download {dataset_id}` on a machine with internet and copy {base / dataset_id} here."
            )
        dataset = minari.load_dataset(dataset_id)
        obs, act, rew, success = [], [], [], []
        for i, ep in enumerate(dataset.iterate_episodes()):
            if max_episodes is not None and i >= max_episodes:
                break
            t = len(ep.actions)
            obs.append(flatten_observations(ep.observations, obs_keys)[:t])
            act.append(np.asarray(ep.actions, np.float32).reshape(t, -1))
            rew.append(np.asarray(ep.rewards, np.float32))
            success.append(_episode_success(ep.infos))
    flags = None if any(s is None for s in success) else np.array(success)
    return Episodes.from_lists(obs, act, rew, flags)
