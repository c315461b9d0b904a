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

Files are checked before use, and refused with one line naming the problem and the expected
form: missing keys, columns of different lengths, non-finite values, and a raw file whose last
row is not terminal (cut short mid-episode). With ``env_id`` the file must also have that
environment's columns, widths and dtypes exactly as OGBench writes them (``ogbench_data.layout``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from domains.robot.datasets.episodes import Episodes, flatten_observations
from domains.robot.ogbench_data import check_arrays, check_complete

Layout = Literal["auto", "raw", "transitions"]


def read_ogbench_npz(
    path: str | Path, *, layout: Layout = "auto", max_episodes: int | None = None, env_id: str | None = None
) -> Episodes:
    """Read an OGBench ``.npz`` file into ``Episodes`` (``layout="auto"`` decides by keys).

    ``env_id`` (e.g. ``cube-double-v0``) requires the file to be a raw dataset of that
    environment, in OGBench's keys, widths and dtypes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no OGBench dataset at {path}. Download it where there is internet "
            "(`ogbench.download_datasets([name], dataset_dir)`) and copy the .npz file here, or generate one "
            "by OGBench's procedure: `python -m domains.robot.collect dataset=<name> out_dir=<dir>`."
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file (cut short or corrupt?): {' '.join(str(exc).split())}") from None
    if layout == "auto":
        layout = "transitions" if ("next_observations" in data or "valids" in data) else "raw"
    if env_id is not None and layout != "raw":
        raise ValueError(f"{path}: a {layout}-layout file; a dataset of {env_id} is expected in OGBench's released (raw) layout.")
    check_arrays(data, str(path), env_id)
    terminals = data["terminals"].astype(bool).reshape(-1)

    if layout == "raw":
        check_complete(terminals, str(path))
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
