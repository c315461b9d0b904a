"""OGBench ``.npz`` datasets.

Two layouts exist, told apart by their keys (the convention of ``ogbench.utils.load_dataset``):

* **raw**, as OGBench releases its files (``observations``, ``actions``, ``terminals``, and
  for some ``qpos``/``qvel``/``button_states``): each trajectory stores its final state as an
  extra row whose action is a dummy, and ``terminals`` is 1 on exactly that row::

      observations [s0 s1 s2 s3 s4 | s0 ...]   actions [a0 a1 a2 a3 a4* | ...]   terminals [0 0 0 0 1 | ...]

  The flagged rows are dropped; the row before each one ends its episode.
* **transitions**, what ``load_dataset`` returns and one may save again: ``next_observations``
  is present, every row is a valid transition and ``terminals`` is 1 on each episode's last
  one. A compact dataset (``valids`` present) first drops its rows with ``valids == 0``.

Optional ``rewards`` are kept; ``masks`` (``1 - success`` in OGBench's single-task
relabelling) give one success flag per episode: success anywhere in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from domains.robot.datasets.episodes import Episodes, flatten_observations

Layout = Literal["auto", "raw", "transitions"]


def read_ogbench_npz(path: str | Path, *, layout: Layout = "auto", max_episodes: int | None = None) -> Episodes:
    """Read an OGBench ``.npz`` file into ``Episodes`` (``layout="auto"`` decides by keys)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no OGBench dataset at {path}. Download it where there is internet "
            "(`ogbench.download_datasets([name], dataset_dir)`) and copy the .npz file here."
        )
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    missing = [k for k in ("observations", "actions", "terminals") if k not in data]
    if missing:
        raise KeyError(f"{path} lacks {missing}; OGBench files have observations, actions and terminals.")
    if layout == "auto":
        layout = "transitions" if ("next_observations" in data or "valids" in data) else "raw"
    terminals = data["terminals"].astype(bool).reshape(-1)

    if layout == "raw":
        keep = ~terminals
        ends = np.concatenate([terminals[1:], [True]])[keep]
    elif layout == "transitions":
        keep = data["valids"].astype(bool).reshape(-1) if "valids" in data else np.ones_like(terminals)
        ends = terminals[keep]
    else:
        raise ValueError(f"layout must be 'auto', 'raw' or 'transitions', got {layout!r}.")

    rewards = data["rewards"][keep] if "rewards" in data else None
    success = (data["masks"][keep] == 0) if "masks" in data else None
    episodes = Episodes.from_boundaries(
        flatten_observations(data["observations"][keep]), data["actions"][keep], ends, rewards, success
    )
    if max_episodes is not None and max_episodes < episodes.num_episodes:
        episodes = episodes.select(np.arange(max_episodes))
    return episodes
