"""Command line: collect robot datasets.

Scripted-expert demonstrations (Minari + D4RL-style HDF5, see ``domains.robot.expert_data``)::

    python -m domains.robot.collect task=reacher num_episodes=100 out_dir=data/reacher [seed=0] [action_noise=0.3] [elbow=random]

Extra ``key=value`` arguments go to the task's expert: ``elbow`` (up, down, random) for reacher,
``oracle`` (markov, plan) and ``noise`` for cube_single, ``kp``/``kd`` for the PointMaze and
Reacher experts.

OGBench manipulation datasets by OGBench's own procedure (see ``domains.robot.ogbench_data``)::

    python -m domains.robot.collect dataset=cube-double-play-v0 [out_dir=data] [num_episodes=1000]
        [num_val_episodes=100] [episode_length=1001] [seed=0] [workers=1]

(or ``env=cube-double-v0 dataset_type=play``). Sizes default to the official dataset's. With
``out_dir`` the files are ``<out_dir>/<dataset>.npz`` and ``<out_dir>/<dataset>-val.npz``;
without it they go to the cache the robot domain reads (``data_dir``, default
``~/.cache/shortcutlib/robot``), where ``task=cube_double`` and the like find them.

Arguments are ``key=value``; ``--key value`` and ``--key=value`` work too (dashes become underscores).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from domains.robot import DEFAULT_DATA_DIR

USAGE = (
    "python -m domains.robot.collect task=reacher num_episodes=100 out_dir=data [seed=0] [action_noise=0.0] [expert_key=value ...]\n"
    "       python -m domains.robot.collect dataset=cube-double-play-v0 [out_dir=DIR] [num_episodes=N] [num_val_episodes=N] "
    "[episode_length=1001] [seed=0] [workers=1] [data_dir=DIR]"
)
OGBENCH_KEYS = {"dataset", "env", "dataset_type", "out_dir", "num_episodes", "num_val_episodes", "episode_length", "seed", "workers", "data_dir", "progress"}


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value``, ``--key=value`` and ``--key value`` into a dict (dashes in keys become underscores)."""
    args: dict[str, Any] = {}
    items = list(argv)
    while items:
        item = items.pop(0)
        flag = item.startswith("--")
        key, sep, value = item.removeprefix("--").partition("=")
        if flag and not sep:
            if not items or items[0].startswith("--"):
                raise SystemExit(f"--{key} needs a value. Usage: {USAGE}")
            value, sep = items.pop(0), "="
        if not sep:
            raise SystemExit(f"Arguments are key=value, got {item!r}. Usage: {USAGE}")
        args[key.replace("-", "_") if flag else key] = _parse_value(value)
    return args


def ogbench(args: dict[str, Any]) -> dict[str, Any]:
    from domains.robot.ogbench_data import EPISODE_LENGTH, Procedure, cached_dataset, generate_dataset, parse_dataset_name

    unknown = sorted(set(args) - OGBENCH_KEYS)
    if unknown:
        raise SystemExit(f"{unknown[0]}: unknown argument for an OGBench dataset; accepted: {', '.join(sorted(OGBENCH_KEYS))}.")
    try:
        if "dataset" in args:
            env_id, dataset_type = parse_dataset_name(str(args["dataset"]))
        else:
            env_id, dataset_type = str(args["env"]), str(args.get("dataset_type", "play"))
        procedure = Procedure(env_id, dataset_type, int(args.get("episode_length", EPISODE_LENGTH)), int(args.get("seed", 0)))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    sizes = {"num_episodes": args.get("num_episodes"), "num_val_episodes": args.get("num_val_episodes")}
    sizes = {k: None if v is None else int(v) for k, v in sizes.items()}
    workers, progress = int(args.get("workers", 1)), bool(args.get("progress", True))
    if "out_dir" in args:
        path = Path(str(args["out_dir"])) / f"{procedure.name}.npz"
        return generate_dataset(procedure, path, **sizes, workers=workers, progress=progress)
    path, val_path, info = cached_dataset(args.get("data_dir", DEFAULT_DATA_DIR), procedure, **sizes, workers=workers, progress=progress)
    return {**info, "path": str(path), "val_path": None if val_path is None else str(val_path)}


def expert(args: dict[str, Any]) -> dict[str, Any]:
    from domains.robot.expert_data import collect

    missing = {"task", "num_episodes", "out_dir"} - set(args)
    if missing:
        raise SystemExit(f"Missing arguments {sorted(missing)}. Usage: {USAGE}")
    task, num_episodes, out_dir = str(args.pop("task")), int(args.pop("num_episodes")), Path(str(args.pop("out_dir")))
    return collect(task, num_episodes, out_dir, seed=int(args.pop("seed", 0)), **args)


def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    if "task" in args and ("dataset" in args or "env" in args):
        raise SystemExit(f"Give task=... (scripted expert) or dataset=/env=... (OGBench), not both. Usage: {USAGE}")
    result = ogbench(args) if ("dataset" in args or "env" in args) else expert(args)
    for key, value in result.items():
        print(f"{key}: {value}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
