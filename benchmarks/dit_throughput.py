"""DiT training and sampling throughput, shortcut vs flow matching in the same run, with MFU.

    python benchmarks/dit_throughput.py --sizes B XL --batch 256          # on an accelerator
    python benchmarks/dit_throughput.py --cpu-small                       # what a CPU can show

Training steps/s for both objectives (interleaved rounds over the same batches), sampling
samples/s at 1 and 128 steps, and model-FLOPs utilisation: the model's matmul FLOPs per step
(forward 1x, backward 2x, plus the bootstrap forwards of the shortcut objective) over the
measured time, divided by the device's peak (given with --peak-tflops, or on CPU measured
with a large float32 matmul, so that MFU is relative to what this machine can do).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.timing import interleaved_step_times, median_ratio  # noqa: E402
from shortcutlib.config import TrainConfig  # noqa: E402
from shortcutlib.inference import make_sample_fn  # noqa: E402
from shortcutlib.nn.dit import DiT, flops_per_example  # noqa: E402
from shortcutlib.nn.factory import build_backbone  # noqa: E402
from shortcutlib.objectives.base import ObjectiveContext  # noqa: E402
from shortcutlib.objectives.flow_matching import FlowMatching  # noqa: E402
from shortcutlib.objectives.shortcut import Shortcut  # noqa: E402
from shortcutlib.train.state import create_train_state, make_optimizer  # noqa: E402
from shortcutlib.train.step import make_train_step  # noqa: E402

LATENT = (32, 32, 4)  # sd-vae-ft-mse latents of 256x256 images
# Dense bf16 peaks from the vendors' data sheets (TFLOP/s), by jax device_kind.
BF16_PEAK_TFLOPS = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H200": 989.0, "NVIDIA H100": 989.0, "NVIDIA A100-SXM4-80GB": 312.0}
MFU_GOAL = 0.40  # DiT-B/2 on an H100/H200-class GPU
NUM_CLASSES = 1000
OBJECTIVES = {"shortcut": Shortcut, "flow_matching": FlowMatching}


def measured_peak_tflops(n: int = 2048, repeats: int = 10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    jax.block_until_ready(out)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def train_flops(fwd: float, batch: int, objective: str, bootstrap_fraction: float = Shortcut.Config().bootstrap_fraction) -> float:
    """Matmul FLOPs of one training step: 3x forward for the gradient, and for the shortcut
    objective two no-gradient forwards over the bootstrap examples."""
    flops = 3 * fwd * batch
    if objective == "shortcut":
        flops += 2 * fwd * round(batch * bootstrap_fraction)
    return flops


def benchmark(dims: dict, batch: int, rounds: int, steps_per_round: int, dtype: str) -> dict:
    model_cfg = DiT.Config(_target_="shortcutlib.nn.dit.DiT", dtype=dtype, **dims)
    train_cfg = TrainConfig(lr=1e-4, weight_decay=0.1, steps=1000, grad_clip=1.0)
    rng = np.random.default_rng(0)
    batches = [
        {"x": rng.standard_normal((batch, *LATENT)).astype(np.float32), "cond": rng.integers(0, NUM_CLASSES, batch).astype(np.int32)}
        for _ in range(steps_per_round)
    ]
    steps, states, runs = {}, {}, {}
    for name, objective_class in OBJECTIVES.items():
        model = build_backbone(model_cfg, data_shape=LATENT, num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))
        tx = make_optimizer(train_cfg)
        graphdef, state = create_train_state(model, tx, 0)
        objective = objective_class(context=ObjectiveContext(num_classes=NUM_CLASSES, class_dropout=0.1, total_steps=1000))
        steps[name] = jax.jit(make_train_step(graphdef, objective, tx, ema_decay=0.999), donate_argnums=0)
        states[name] = state
        runs[name] = (graphdef, objective)
    times, states = interleaved_step_times(steps, states, batches, rounds=rounds)
    ratio, ratios = median_ratio(times["shortcut"], times["flow_matching"])

    graphdef, objective = runs["shortcut"]
    sample_fn = make_sample_fn(graphdef, states["shortcut"].params, objective, LATENT, num_classes=NUM_CLASSES)
    labels = jnp.asarray(batches[0]["cond"])
    sampling = {}
    for n in (1, 128):
        jax.block_until_ready(sample_fn(jax.random.PRNGKey(0), n, batch, labels))
        start = time.perf_counter()
        jax.block_until_ready(sample_fn(jax.random.PRNGKey(1), n, batch, labels))
        sampling[n] = batch / (time.perf_counter() - start)

    fwd = flops_per_example(LATENT, dims["patch"], dims["hidden"], dims["depth"], model_cfg.mlp_ratio)
    med = {name: float(np.median(t)) for name, t in times.items()}
    return {
        "step_s": med,
        "steps_per_s": {k: 1 / v for k, v in med.items()},
        "shortcut_over_fm": ratio,
        "round_ratios": ratios,
        "samples_per_s": sampling,
        "train_tflops": {k: train_flops(fwd, batch, k) / med[k] / 1e12 for k in OBJECTIVES},
        "fwd_gflops_per_example": fwd / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["B", "XL"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 SXM bf16 dense: 989)")
    parser.add_argument("--cpu-small", action="store_true", help="a small DiT (hidden 128, depth 4, patch 2), batch 8, float32")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dit_throughput.md")
    args = parser.parse_args()

    from shortcutlib.nn.dit import dit_config

    if args.cpu_small:
        configs = {"small (hidden 128, depth 4, 4 heads)/2": {"patch": 2, "hidden": 128, "depth": 4, "num_heads": 4}}
        args.batch, args.dtype, args.rounds, args.steps_per_round = 8, "float32", 5, 3
    else:
        configs = {}
        for size in args.sizes:
            dims = dit_config(size, 2)
            configs[f"DiT-{size}/2"] = {"patch": 2, "hidden": dims["hidden"], "depth": dims["depth"], "num_heads": dims["num_heads"]}
    on_cpu = jax.devices()[0].platform == "cpu"
    peak = args.peak_tflops or (measured_peak_tflops() if on_cpu else BF16_PEAK_TFLOPS.get(jax.devices()[0].device_kind))
    peak_note = (
        f"{peak:.3f} TFLOP/s, " + ("given" if args.peak_tflops else "measured with a 2048x2048 float32 matmul on this machine" if on_cpu else "the device's dense bf16 data-sheet peak")
        if peak
        else "not given (pass --peak-tflops)"
    )
    results = {name: benchmark(cfg, args.batch, args.rounds, args.steps_per_round, args.dtype) for name, cfg in configs.items()}

    lines = [
        "# DiT throughput: shortcut vs flow matching",
        "",
        f"Machine: {describe_machine()}.",
        f"Command: `python benchmarks/dit_throughput.py {' '.join(sys.argv[1:])}`",
        f"Latents {LATENT}, {NUM_CLASSES} classes, batch {args.batch}, {args.dtype} compute with float32 parameters, "
        f"AdamW; {args.rounds} interleaved rounds of {args.steps_per_round} steps. Peak for MFU: {peak_note}.",
        "",
        "| model | fwd GFLOP/example | FM steps/s | shortcut steps/s | shortcut / FM step time | samples/s (1 step) | samples/s (128 steps) | MFU FM | MFU shortcut |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        mfu = {k: (f"{r['train_tflops'][k] / peak:.1%}" if peak else "n/a") for k in OBJECTIVES}
        lines.append(
            f"| {name} | {r['fwd_gflops_per_example']:.2f} | {r['steps_per_s']['flow_matching']:.3f} | {r['steps_per_s']['shortcut']:.3f} | "
            f"{r['shortcut_over_fm']:.3f} | {r['samples_per_s'][1]:.1f} | {r['samples_per_s'][128]:.2f} | {mfu['flow_matching']} | {mfu['shortcut']} |"
        )
    if on_cpu:
        lines += ["", "No GPU was available for this run: these are CPU figures of the model above, not DiT-B/XL at batch 256."]
    elif peak and "DiT-B/2" in results:
        mfu = results["DiT-B/2"]["train_tflops"]["shortcut"] / peak
        lines += ["", f"Goal (computed): DiT-B/2 shortcut training MFU {mfu:.1%} against {MFU_GOAL:.0%}: {'met' if mfu >= MFU_GOAL else 'NOT met'}."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
