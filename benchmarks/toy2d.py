"""Shortcut vs flow matching on 2-D Gaussian mixtures: distance to the data and to the exact
flow map at every step budget, and the training step time of shortcut over flow matching.

    python benchmarks/toy2d.py [--steps 5000] [--dataset gmm_ring] [--quick]

Both models share data, backbone, batch, optimizer and step count. Step times are measured
in the same process, interleaving blocks of steps of the two methods so that machine noise
hits both alike; the ratio is the median over blocks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe_machine  # noqa: E402
from benchmarks.timing import interleaved_step_times, median_ratio  # noqa: E402
from domains.vector_eval import metric_vs_steps_plot  # noqa: E402
from shortcutlib.config import compose_config  # noqa: E402
from shortcutlib.inference import make_sample_fn  # noqa: E402
from shortcutlib.run import build_domain  # noqa: E402
from shortcutlib.train.loop import build_run, encoded_batches, train  # noqa: E402
from shortcutlib.train.step import make_train_step  # noqa: E402

METHODS = ("shortcut", "flow_matching")
BUDGETS = [1, 2, 4, 8, 16, 32, 64, 128]


def training_step_times(cfg, domain, runs, states, rounds: int = 7, block_steps: int = 50) -> dict[str, list[float]]:
    steps = {
        m: jax.jit(make_train_step(runs[m].graphdef, runs[m].objective, runs[m].tx, ema_decay=0.999))
        for m in METHODS
    }
    batches = encoded_batches(domain, cfg.train.batch_size, 999, 0)
    times, _ = interleaved_step_times(steps, states, [next(batches) for _ in range(block_steps)], rounds=rounds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--dataset", default="gmm_ring")
    parser.add_argument("--eval-samples", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 steps, small evaluation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--shortcut-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the shortcut run only, e.g. objective.level_decay=0.5")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.eval_samples = 200, 512
    work = args.out / ".toy2d_runs"
    overrides = [
        "domain=toy2d",
        f"domain.dataset={args.dataset}",
        f"domain.eval_samples={args.eval_samples}",
        f"train.steps={args.steps}",
        "train.ckpt_every=0",
        "logging.progress=false",
    ]
    results, runs, states, wall = {}, {}, {}, {}
    for method in METHODS:
        cfg = compose_config(overrides + [f"objective={method}"] + (args.shortcut_set if method == "shortcut" else []))
        domain = build_domain(cfg)
        runs[method] = build_run(cfg, domain)
        run_dir = work / f"{method}_{args.dataset}_{args.steps}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a benchmark trains from scratch, never resumes
        start = time.perf_counter()
        out = train(cfg, domain, run_dir, run=runs[method])
        wall[method] = time.perf_counter() - start
        states[method] = out.state
        sample_fn = make_sample_fn(runs[method].graphdef, out.state.ema_params, runs[method].objective, domain.sample_shape)
        results[method] = domain.evaluate(sample_fn, BUDGETS, run_dir / "samples")
    times = training_step_times(cfg, domain, runs, states)
    ratio, ratios = median_ratio(times["shortcut"], times["flow_matching"])

    args.out.mkdir(parents=True, exist_ok=True)
    name = f"toy2d_{args.dataset}" + ("_quick" if args.quick else "")
    merged = {f"{m}/{k}": v for m, r in results.items() for k, v in r.items()}
    plot = metric_vs_steps_plot(merged, [f"{m}/{k}" for m in METHODS for k in ("swd", "flow_rmse")], args.out / f"{name}.png", "distance")
    lines = [
        f"# Shortcut vs flow matching on `{args.dataset}`",
        "",
        f"Machine: {describe_machine()}.",
        f"Command: `python benchmarks/toy2d.py --steps {args.steps} --dataset {args.dataset}{' --quick' if args.quick else ''}"
        + (f" --shortcut-set {' '.join(args.shortcut_set)}" if args.shortcut_set else "") + "`",
        f"Setting: residual MLP (configs/model/toy2d.yaml), batch 256, AdamW lr 1e-3 cosine, EMA 0.999, {args.steps} steps each, "
        f"{args.eval_samples} samples per budget from the same noise.",
        "",
        "Sliced W2 to fresh data (`swd`, floor between two fresh draws: "
        f"{results['shortcut']['swd_floor']:.4f}) and RMS distance to the exact flow map of the same noise (`flow_rmse`).",
        "",
        "| steps | " + " | ".join(f"{m} swd | {m} flow_rmse" for m in METHODS) + " |",
        "|---|" + "---|---|" * len(METHODS),
    ]
    for n in BUDGETS:
        cells = " | ".join(f"{results[m][f'swd@{n}']:.4f} | {results[m].get(f'flow_rmse@{n}', float('nan')):.4f}" for m in METHODS)
        lines.append(f"| {n} | {cells} |")
    lines += [
        "",
        f"Training step time, shortcut / flow matching: **{ratio:.3f}** (median of {len(ratios)} interleaved blocks of 50 steps; "
        f"per-block ratios {', '.join(f'{r:.2f}' for r in ratios)}; paper: about 1.16). "
        f"Median step: shortcut {statistics.median(times['shortcut']) * 1e3:.2f} ms, flow matching {statistics.median(times['flow_matching']) * 1e3:.2f} ms.",
        "Wall time of the training runs (including compilation and checkpoints): "
        + ", ".join(f"{m} {wall[m]:.0f} s" for m in METHODS)
        + ".",
        "",
        f"![distance vs steps]({plot.name})",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"results": results, "step_time_ratio": ratio, "ratios": ratios, "wall_s": wall}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
