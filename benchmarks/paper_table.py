"""The paper's comparison table at CPU scale: every method, one backbone, one data set, one budget.

    python -m benchmarks.paper_table --domain toy2d [--quick] [--methods shortcut,flow_matching,...]
    python -m benchmarks.paper_table --domain digits

Each method trains with the same backbone, data, batch size and total number of training steps
(two-phase methods count their teacher's steps in the total), then samples with 1, 2, 4, ..., 128
Euler steps. Quality: toy2d, sliced W2 to fresh data and RMS distance to the exact flow map of
the same noise; digits, the Fréchet distance in a digit classifier's features (and its noise
floor). Training time per step is relative to flow matching measured in the same invocation
(for two-phase methods: their student phase; compilation excluded); wall time is the whole
training, teacher and pair drawing included. Writes
``benchmarks/results/paper_table_<domain>.md`` and ``.png``; run folders go to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import compose_config, fmt, machine_description, markdown_table
from shortcutlib.inference import make_sample_fn
from shortcutlib.run import build_domain
from shortcutlib.train.phases import run_phases

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = [1, 2, 4, 8, 16, 32, 64, 128]

# (row label, objective config)
METHODS: list[tuple[str, str]] = [
    ("Shortcut", "shortcut"),
    ("Flow matching", "flow_matching"),
    ("Consistency training", "consistency"),
    ("Consistency distillation", "consistency_distillation"),
    ("Progressive distillation", "progressive"),
    ("Live reflow", "reflow"),
    ("Two-stage reflow", "reflow_two_stage"),
    ("MeanFlow", "meanflow"),
]

# Shared by every method of a domain: backbone, batch, total steps, evaluation size.
SETTINGS: dict[str, dict[str, list[str]]] = {
    "toy2d": {
        "full": ["domain=toy2d", "model.hidden=128", "model.depth=3", "train.batch_size=256", "train.steps=1200"],
        "quick": ["domain=toy2d", "model.hidden=32", "model.depth=1", "train.batch_size=64", "train.steps=40", "train.warmup_steps=4",
                  "domain.eval_samples=256", "domain.flow_steps=50"],
    },
    "digits": {
        # The MLP predicts the clean digit (model.prediction=data), for every method: on the shortcut
        # row the velocity output left 1-step samples noisy (see the reading in the results file).
        "full": ["domain=digits", "model=mlp", "model.hidden=256", "model.depth=3", "model.prediction=data",
                 "model.min_remaining=0.2", "train.batch_size=128", "train.steps=2500"],
        "quick": ["domain=digits", "model=mlp", "model.hidden=32", "model.depth=1", "model.prediction=data",
                  "model.min_remaining=0.2", "train.batch_size=32", "train.steps=40", "train.warmup_steps=4",
                  "domain.eval_draws=1"],
    },
}
# Pair drawing for two-stage reflow (its cost counts in the method's wall time).
PAIRS = {"full": {"toy2d": (8192, 64), "digits": (8192, 32)}, "quick": {"toy2d": (256, 4), "digits": (256, 4)}}
# EMA horizon of 100 steps: the configs' 0.999 would leave short runs dominated by their early weights.
# Logging every 20 steps gives even the short progressive-distillation phases a timed window.
COMMON = ["logging.progress=false", "train.ckpt_every=0", "train.ema_decay=0.99", "train.log_every=20"]
METRICS = {"toy2d": ["swd", "flow_rmse"], "digits": ["fd", "class_acc"]}  # the first is the goal's
LOWER_IS_BETTER = {"swd", "flow_rmse", "fd"}
LABELS = {
    "swd": "sliced W2 to data",
    "flow_rmse": "RMS to exact flow map",
    "fd": "Fréchet distance (digit features)",
    "class_acc": "class accuracy of the samples (digit classifier)",
}


@dataclass
class MethodResult:
    label: str
    objective: str
    total_steps: int
    steps_per_sec: float
    train_wall_s: float
    eval_wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    fm_steps_per_sec: float = float("nan")  # flow matching's throughput in the same invocation


class CachedFlow:
    """The toy mixture with its exact flow map memoised: every method is scored on the same noise."""

    def __init__(self, mixture: Any):
        self._mixture = mixture
        self._cache: dict[tuple[bytes, tuple], np.ndarray] = {}

    def flow(self, x0: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        key = (np.asarray(x0).tobytes(), args + tuple(sorted(kwargs.items())))
        if key not in self._cache:
            self._cache[key] = self._mixture.flow(x0, *args, **kwargs)
        return self._cache[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mixture, name)


def method_overrides(objective: str, domain: str, budget: str) -> list[str]:
    if objective != "reflow_two_stage":
        return []
    pairs, steps = PAIRS[budget][domain]
    return [f"objective.pairs={pairs}", f"objective.pair_steps={steps}", f"objective.pair_batch={min(2048, pairs)}"]


def run_method(label: str, objective: str, overrides: list[str], domain: Any, run_dir: Path) -> MethodResult:
    cfg = compose_config([*overrides, f"objective={objective}", f"out_dir={run_dir}"])
    shutil.rmtree(run_dir, ignore_errors=True)  # fresh runs, never a resume
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    phased = run_phases(cfg, domain, run_dir)
    result, total = phased.result, phased.total_steps
    if len(phased.phases) > 1:
        students = [p for p in phased.phases if p.name.startswith("student") and p.steps > 0]
        # Student throughput over all student phases (progressive distillation has several).
        sps = sum(p.steps for p in students) / sum(p.steps / p.steps_per_sec for p in students)
        phases = [vars(p) for p in phased.phases]
    else:
        sps, phases = result.steps_per_sec, []
    train_wall = time.perf_counter() - start
    start = time.perf_counter()
    sample_fn = make_sample_fn(
        result.run.graphdef, result.state.ema_params, result.run.objective, tuple(domain.sample_shape), num_classes=domain.num_classes
    )
    metrics = domain.evaluate(sample_fn, STEPS, run_dir / "eval")
    eval_wall = time.perf_counter() - start
    print(f"[{label}] {total} steps, {sps:.1f} steps/s, train {train_wall:.0f}s, eval {eval_wall:.0f}s: "
          + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.split("@")[-1] in ("1", "4", "128") or "@" not in k), flush=True)
    return MethodResult(label, objective, total, float(sps), train_wall, eval_wall, metrics, phases)


def plot(results: list[MethodResult], domain: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = METRICS[domain]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in results:
            ys = [r.metrics.get(f"{name}@{n}", np.nan) for n in STEPS]
            ax.plot(STEPS, ys, marker="o", ms=3, label=r.label, lw=2.2 if r.objective == "shortcut" else 1.2)
        floor = results[0].metrics.get(f"{name}_floor") if results else None
        if floor is not None:
            ax.axhline(floor, color="k", ls="--", lw=0.8, label="noise floor")
        ax.set_xscale("log", base=2)
        if name in LOWER_IS_BETTER:
            ax.set_yscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(LABELS[name])
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: list[MethodResult], domain: str) -> str:
    header = ["Method", "train steps"]
    for name in METRICS[domain]:
        header += [f"{name}@1", f"{name}@4", f"{name}@128"]
    header += ["time/step vs FM", "train wall (s)"]
    rows = []
    for r in results:
        row = [r.label, str(r.total_steps) + (" (incl. teacher)" if r.phases else "")]
        for name in METRICS[domain]:
            row += [fmt(r.metrics.get(f"{name}@{n}", float("nan"))) for n in (1, 4, 128)]
        rel = r.fm_steps_per_sec / r.steps_per_sec if r.steps_per_sec > 0 else float("nan")
        row += [fmt(rel, 2) + "x", f"{r.train_wall_s:.0f}"]
        rows.append(row)
    return markdown_table(header, rows)


def goal_check(results: list[MethodResult], domain: str) -> list[str]:
    """The shortcut row against the goals: 1 step within 1.5x of its 128 steps; better than FM, CT, live reflow at 1 and 4."""
    by = {r.objective: r for r in results}
    sc = by.get("shortcut")
    if sc is None:
        return []
    name = METRICS[domain][0]
    lines = []
    ratio = sc.metrics[f"{name}@1"] / sc.metrics[f"{name}@128"]
    lines.append(f"- Shortcut {name}@1 / {name}@128 = {ratio:.2f} (goal: at most 1.5).")
    for obj in ("flow_matching", "consistency", "reflow"):
        if obj in by:
            for n in (1, 4):
                better = sc.metrics[f"{name}@{n}"] < by[obj].metrics[f"{name}@{n}"]
                lines.append(
                    f"- {name}@{n}: shortcut {sc.metrics[f'{name}@{n}']:.4f} vs {by[obj].label.lower()} "
                    f"{by[obj].metrics[f'{name}@{n}']:.4f}: {'better' if better else 'NOT better'}."
                )
    return lines


def write_report(results: list[MethodResult], domain: str, budget: str, command: str, overrides: list[str], wall: float, out: Path) -> Path:
    md = out / f"paper_table_{domain}.md"
    png = out / f"paper_table_{domain}.png"
    plot(results, domain, png)
    notes = ""
    if md.exists():  # keep hand-written reading across reruns
        text = md.read_text()
        marker = "## Reading"
        if marker in text:
            notes = text[text.index(marker):]
    floor = results[0].metrics.get(f"{METRICS[domain][0]}_floor") if results else None
    lines = [
        f"# Paper comparison table: {domain} ({budget} budget)",
        "",
        f"Machine: {machine_description()}. Benchmark wall time (training and evaluation of all rows): {wall / 60:.1f} min.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Shared setting (every method): `" + " ".join(overrides) + "`; evaluation at 1, 2, 4, ..., 128 Euler steps "
        "with EMA weights. Two-phase methods spend half the steps on a flow-matching teacher (counted in the total).",
        "",
        table(results, domain),
        "",
    ]
    if floor is not None:
        lines += [f"Noise floor ({METRICS[domain][0]} between two independent draws of real data): {floor:.4f}.", ""]
    lines += [f"![quality vs sampling steps]({png.name})", "", "Goal check (computed):", "", *goal_check(results, domain), ""]
    lines += ["Full curves (1..128 steps):", ""]
    for name in METRICS[domain]:
        header = ["Method"] + [str(n) for n in STEPS]
        rows = [[r.label] + [fmt(r.metrics.get(f"{name}@{n}", float("nan"))) for n in STEPS] for r in results]
        lines += [f"{LABELS[name]}:", "", markdown_table(header, rows), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    md.write_text("\n".join(lines))
    return md


def merge_results(paths: list[str], fresh: list[MethodResult]) -> list[MethodResult]:
    """Rows from earlier invocations, replaced by this invocation's rows, in the table's order.

    A row's time is relative to the flow-matching row of its own invocation. A file without one
    is timed against the flow-matching row of the nearest file before it, and rows run with
    ``--no-fm`` against the last merged one.
    """
    rows: dict[str, MethodResult] = {}
    reference = float("nan")
    for path in [*paths, None]:
        loaded = fresh if path is None else [MethodResult(**raw) for raw in json.loads(Path(path).read_text())]
        reference = next((r.steps_per_sec for r in loaded if r.objective == "flow_matching"), reference)
        for r in loaded:
            if r.fm_steps_per_sec != r.fm_steps_per_sec:  # nan: no flow matching beside it
                r.fm_steps_per_sec = reference
            rows[r.objective] = r
    return [rows[m] for _, m in METHODS if m in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--quick", action="store_true", help="tiny smoke setting (seconds per method)")
    parser.add_argument("--methods", default=",".join(m for _, m in METHODS), help="comma-separated objective configs")
    parser.add_argument("--steps", type=int, default=None, help="override the total training steps per method")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides for every method")
    parser.add_argument("--merge", nargs="*", default=[], metavar="RESULTS_JSON",
                        help="results.json of earlier invocations; their rows are kept unless rerun here")
    parser.add_argument("--no-fm", action="store_true", help="do not rerun flow matching; time relative to the merged flow-matching row")
    parser.add_argument("--report-only", action="store_true", help="train nothing: write the report from --merge files")
    parser.add_argument("--work-dir", default="runs/paper_table", help="where run folders go")
    parser.add_argument("--out", default=str(RESULTS), help="where the table and plot go")
    args = parser.parse_args(argv)

    budget = "quick" if args.quick else "full"
    overrides = [*SETTINGS[args.domain][budget], *COMMON]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    overrides += args.set
    wanted = args.methods.split(",")
    unknown = sorted(set(wanted) - {m for _, m in METHODS})
    if unknown:
        parser.error(f"unknown method(s) {unknown}; accepted: {', '.join(m for _, m in METHODS)}")
    if "flow_matching" not in wanted and not args.no_fm:
        wanted.insert(0, "flow_matching")  # the time reference
    cfg = compose_config(overrides)
    domain = build_domain(cfg)
    if getattr(domain, "mixture", None) is not None:
        domain.mixture = CachedFlow(domain.mixture)
    work = Path(args.work_dir) / f"{args.domain}_{budget}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = []
    for label, objective in METHODS:
        if objective in wanted and not args.report_only:
            extra = method_overrides(objective, args.domain, budget)
            results.append(run_method(label, objective, [*overrides, *extra], domain, work / objective))
    wall = time.perf_counter() - start
    fm_sps = next((r.steps_per_sec for r in results if r.objective == "flow_matching"), float("nan"))
    for r in results:
        r.fm_steps_per_sec = fm_sps
    if results:
        (work / "results.json").write_text(json.dumps([vars(r) for r in results], indent=2, default=float))
    results = merge_results(args.merge, results)
    command = "python -m benchmarks.paper_table " + " ".join(argv if argv is not None else sys.argv[1:])
    wall = sum(r.train_wall_s + r.eval_wall_s for r in results)
    md = write_report(results, args.domain, budget, command, overrides, wall, out)
    print(f"Wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
