"""Train-step throughput against device count and precision; writes benchmarks/results/scaling.md.

    python benchmarks/scaling.py [--devices 1 2 4 8] [--steps 10] [--rounds 5] [--hidden 128] [--batch 128]

Each device count runs in its own subprocess with that many fake CPU devices
(``--xla_force_host_platform_device_count``): on one CPU they share the same cores, so
these numbers measure the overhead of sharding and collectives, not speed-ups. The step
is the real sharded train step (flow matching, toy2d, residual MLP) including assembling
the global batch from host data, blocking on every step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(spec: dict) -> dict:
    """In the subprocess: compile, warm up, then time ``steps`` steps."""
    import jax
    import numpy as np

    from shortcutlib import parallel
    from shortcutlib.config import compose_config
    from shortcutlib.run import build_domain
    from shortcutlib.train.loop import build_run, sharded_train_step, state_shardings

    overrides = [
        "domain=toy2d",
        "objective=flow_matching",
        f"model.hidden={spec['hidden']}",
        "model.depth=4",
        f"model.dtype={spec['dtype']}",
        f"train.batch_size={spec['batch']}",
        "train.warmup_steps=0",
        "train.schedule=constant",
        f"parallel.data={spec['data']}",
        f"parallel.fsdp={spec['fsdp']}",
        "parallel.fsdp_min_size=4096",
    ]
    cfg = compose_config(overrides)
    domain = build_domain(cfg)
    run = build_run(cfg, domain)
    mesh = parallel.make_mesh(cfg.parallel)
    shardings = state_shardings(run.state, mesh, cfg.parallel.fsdp_min_size)
    step = sharded_train_step(run, cfg, mesh, shardings)
    state = parallel.place(run.state, shardings)
    host = next(domain.train_data(spec["batch"], 0))
    host = {"x": np.asarray(host["x"], np.float32), "cond": None}
    t0 = time.perf_counter()
    for _ in range(3):  # compile and warm up
        state, metrics = step(state, parallel.global_batch(host, mesh, spec["batch"]), None)
        jax.block_until_ready(metrics)
    warm = time.perf_counter() - t0
    rounds = []
    for _ in range(spec["rounds"]):  # the fastest round is the least disturbed by other load
        t0 = time.perf_counter()
        for _ in range(spec["steps"]):
            state, metrics = step(state, parallel.global_batch(host, mesh, spec["batch"]), None)
            jax.block_until_ready(metrics)
        rounds.append((time.perf_counter() - t0) / spec["steps"])
    best, median = min(rounds), float(np.median(rounds))
    return {**spec, "devices": mesh.size, "steps_per_s": 1.0 / best, "ms_per_step": 1e3 * best, "median_ms": 1e3 * median, "compile_s": warm}


def run_case(spec: dict, devices: int) -> dict:
    from shortcutlib.parallel import fake_cpu_devices_env

    env = {**fake_cpu_devices_env(devices), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"case {spec} on {devices} devices failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import jax

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version(), "load": os.getloadavg()}


def write_report(rows: list[dict], args: argparse.Namespace, info: dict, path: Path) -> None:
    lines = [
        "# Train-step scaling",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, jax {info['jax']}, Python {info['python']}; "
        f"no GPU was available. Load average at the start: {', '.join(f'{x:.1f}' for x in info['load'])} "
        "(the machine was shared, so absolute numbers are noisy).",
        "",
        f"Command: `{' '.join(['python benchmarks/scaling.py', *sys.argv[1:]])}`",
        "",
        f"Step: flow matching on toy2d, residual MLP (hidden {args.hidden}, depth 4), global batch {args.batch}, "
        f"{args.rounds} rounds of {args.steps} timed steps after 3 warm-up steps, blocking on each step, global batch assembled "
        "from host data every step. steps/s and ms/step are from the fastest round (the least disturbed by other load), "
        "the median round is shown too.",
        "",
        "Fake CPU devices share the same cores, so more devices cannot be faster here: the table measures what "
        "sharding costs (partitioned programs, all-reduces, FSDP all-gathers) on top of the same arithmetic. "
        "Speed-ups need real accelerators.",
        "",
        "| devices | mesh (data x fsdp) | dtype | steps/s | ms/step (best) | ms/step (median) | compile + warm-up (s) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['data']} x {r['fsdp']} | {r['dtype']} | {r['steps_per_s']:.1f} | {r['ms_per_step']:.2f} | {r['median_ms']:.2f} | {r['compile_s']:.1f} |")
    lines += [
        "",
        "bfloat16 is `model.dtype=bfloat16` (bf16 activations and matmuls; float32 params, EMA, optimizer state and loss). "
        "A CPU timing says little about bf16 on GPUs or TPUs, whose bf16 matrix units are the reason to use it; "
        "that comparison needs a GPU run.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scaling.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    info = machine()
    base = {"steps": args.steps, "rounds": args.rounds, "hidden": args.hidden, "batch": args.batch}
    rows = []
    cases = [(n, {"data": -1, "fsdp": 1, "dtype": "float32"}) for n in args.devices]
    cases += [(n, {"data": 1, "fsdp": n, "dtype": "float32"}) for n in args.devices if n > 1]
    cases += [(1, {"data": -1, "fsdp": 1, "dtype": "bfloat16"})]
    for n, case in cases:
        row = run_case({**base, **case}, n)
        row["data"] = n // row["fsdp"] if row["data"] == -1 else row["data"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_report(rows, args, info, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
