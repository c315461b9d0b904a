"""Latency of the public inference paths on one observation or one sample (benchmarks/results/policy_latency.md).

    python -m benchmarks.policy_latency [--task ogbench_cube_single] [--calls 1000]

For each policy backbone (the robot MLP, the chunk transformer) a run is trained for a few steps
through the command line (latency does not depend on the weights' values), loaded with
``shortcutlib.load`` and timed on the paths users and evaluation rollouts call:

- ``plan``: one new action chunk for one observation history, the jitted normalise -> sample ->
  denormalise function that ``policy().act`` calls when its queue is empty;
- ``act``: ``policy().act(observation)`` on the environment's own observation, every call (the
  queue refills every ``action_horizon`` calls, so this is the amortised per-step cost);
- ``sample``: ``Model.sample(1, steps)`` on a warm object.

Each is called once to compile, then ``--calls`` times; median and 99th percentile, in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import markdown_table
from benchmarks.machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
BACKBONES = {"mlp": "robot", "transformer": "chunk_transformer"}  # label -> model config


def percentiles(fn: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """Median and p99 wall time (ms) of ``fn(i)`` over ``calls`` calls, after one warm-up call."""
    fn(-1)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 99))


def train_run(task: str, model: str, run_dir: Path) -> None:
    if (run_dir / "checkpoints").exists():
        return
    command = [sys.executable, "-m", "shortcutlib.run", "domain=robot", f"task={task}", f"model={model}", "train.steps=4",
               "train.warmup_steps=0", "eval.enabled=false", "logging.progress=false", f"out_dir={run_dir}"]
    subprocess.run(command, check=True)


def measure(run_dir: Path, steps: list[int], calls: int) -> dict[str, Any]:
    import shortcutlib

    model = shortcutlib.load(run_dir)
    env = model.domain.spec.make_env(seed=0)
    observation, _ = env.reset(seed=0)
    row: dict[str, Any] = {"parameters": int(sum(np.size(p) for p in __import__("jax").tree.leaves(model.params)))}
    for n in steps:
        policy = model.policy(steps=n)
        history = np.repeat(np.asarray(policy.obs_fn(observation), np.float32).reshape(1, 1, -1), policy.obs_horizon, axis=1)
        row[f"plan@{n}"] = percentiles(lambda i: np.asarray(policy.chunk_fn(history)), calls)
        policy.reset()
        row[f"act@{n}"] = percentiles(lambda i: policy.act(observation), calls)
        row[f"sample@{n}"] = percentiles(lambda i: model.sample(1, steps=n, seed=max(i, 0)), calls)
    row["action_horizon"] = model.domain.action_horizon
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="ogbench_cube_single")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--work-dir", default="runs/policy_latency")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    rows = {}
    for label in args.backbones.split(","):
        run_dir = Path(args.work_dir) / f"{args.task}_{label}"
        train_run(args.task, BACKBONES[label], run_dir)
        rows[label] = measure(run_dir, args.steps, args.calls)
        print(label, json.dumps(rows[label]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.policy_latency " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "policy_latency.json").write_text(json.dumps({"machine": describe_machine(), "command": command.strip(),
                                                          "task": args.task, "calls": args.calls, "rows": rows}, indent=1))
    table = [[label, f"{row['parameters']:,}", f"{n}", *(f"{row[f'{k}@{n}'][0]:.3f} / {row[f'{k}@{n}'][1]:.3f}" for k in ("plan", "act", "sample"))]
             for label, row in rows.items() for n in args.steps]
    goal = rows.get("mlp", {}).get("plan@1")
    lines = [
        "# Inference latency: one observation, one sample",
        "",
        f"Machine: {describe_machine()}.",
        f"Command: `{command.strip()}` (task {args.task}; {args.calls} calls after one warm-up; median / p99, ms).",
        "",
        "`plan`: a new action chunk for one observation history, the one jitted normalise -> sample -> denormalise "
        "function behind `policy().act` and the evaluation rollouts; `act`: `policy().act(observation)` every environment "
        f"step (a chunk every {next(iter(rows.values()))['action_horizon']} calls, so the amortised cost); "
        "`sample`: `shortcutlib.load(run).sample(1, steps)` on a warm object.",
        "",
        markdown_table(["backbone", "parameters", "steps", "plan", "act", "sample"], table),
        "",
    ]
    if goal is not None:
        lines.append(f"Goal: single-observation 1-step plan of the MLP policy at most 0.3 ms median: "
                     f"{goal[0]:.3f} ms, {'met' if goal[0] <= 0.3 else 'not met'}.")
    (out / "policy_latency.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
