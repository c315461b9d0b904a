"""Every objective on one backbone, one data set and one training budget, over seeds.

    python -m benchmarks.paper_table --domain toy2d  [--seeds 0 1 2] [--methods shortcut,flow_matching,...] [--quick]
    python -m benchmarks.paper_table --domain digits [--seeds 0 1 2]
    python -m benchmarks.paper_table --domain fmnist [--seeds 0]          # benchmarks/fmnist.py wraps this

Each method trains with the same backbone, data, batch size and total number of training steps
(two-phase methods count their teacher's steps in the total) for each seed, then samples with
1, 2, 4, ..., 128 Euler steps from the same noise. Quality: toy2d, sliced W2 to fresh data and
RMS distance to the exact flow map of the same noise; digits and fmnist, the Fréchet distance in a
classifier's features, its floor at the same sample size, and the class accuracy of the samples.
Tables give the mean and standard deviation over seeds. Training step time is measured for all
methods in one interleaved timing phase (same batches, blocks of steps in turn, median ratio to flow
matching), so machine noise hits every method alike. The goals of the results are computed in the
file. A finished (method, seed) run is reused when the command is repeated with the same settings;
``--stored`` also takes runs from earlier results files (another machine's, say) whose recorded
settings are the current ones, and the report names the command and machine of each; ``--fresh``
retrains. A sampling-only row trains nothing: it samples another row's final weights with
sampler settings of its own (such as ``objective.flow_budget``).
Writes ``benchmarks/results/paper_table_<domain>.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks.common import (
    compose_config,
    flatten,
    fmt,
    machine_description,
    markdown_table,
    same_settings,
)
from benchmarks.timing import interleaved_step_times, median_ratio
from shortcutlib.api import load
from shortcutlib.config import as_dict
from shortcutlib.inference import make_sample_fn
from shortcutlib.objectives import reflow
from shortcutlib.run import build_domain
from shortcutlib.train.loop import build_run, encoded_batches
from shortcutlib.train.phases import plan_phases, run_phases
from shortcutlib.train.step import make_train_step

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = [1, 2, 4, 8, 16, 32, 64, 128]


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    overrides: tuple[str, ...]
    by_default: bool = True  # run without --methods
    # A sampling-only row: the weights of row `samples_of` (trained once, shared), sampled with these
    # extra overrides (settings the sampler reads, such as objective.flow_budget; none may change training).
    samples_of: str | None = None
    sampling: tuple[str, ...] = ()


# The shortcut paper's reference settings, as its experiment configs pin them; no domain's defaults for the
# shortcut (configs/domain_objective/) apply.
PAPER_SHORTCUT = ("objective=shortcut", "~domain_objective", "objective.bootstrap_fraction=0.25", "objective.level_decay=1.0", "objective.bootstrap_ema=true",
                  "objective.clip_intermediate=4.0", "objective.clip_target=4.0", "objective.flow_budget=128",
                  "objective.flow_rows=rest")


def with_shortcut_queries(of: Method) -> Method:
    """A sampling-only row: ``of``'s weights sampled with d = 1/n at every budget (no hand-over to d = 0)."""
    return Method(f"{of.key}_shortcut_queries", f"{of.label.removesuffix(' on the d = 0 rows')}, d = 1/n at every budget", of.overrides,
                  False, samples_of=of.key, sampling=("objective.flow_budget=null",))


SHORTCUT = Method("shortcut", "Shortcut", ("objective=shortcut",))
SHORTCUT_ADAPTIVE = Method("shortcut_adaptive", "Shortcut, adaptive weight (p = 1) on the d = 0 rows",
                           ("objective=shortcut", "objective.adaptive_p=1"), False)
# p = 1/2: each example's gradient is that of 2 sqrt(e + c), a pseudo-Huber loss (a median, not the modes).
SHORTCUT_PSEUDO_HUBER = Method("shortcut_pseudo_huber", "Shortcut, adaptive weight (p = 1/2) on the d = 0 rows",
                               ("objective=shortcut", "objective.adaptive_p=0.5"), False)
# That loss with half the default self-consistency share: less extra compute per step.
SHORTCUT_PSEUDO_HUBER_SIXTEENTH = Method("shortcut_pseudo_huber_sixteenth", "Shortcut, adaptive weight (p = 1/2), 1/16 bootstrap",
                                         ("objective=shortcut", "objective.adaptive_p=0.5", "objective.bootstrap_fraction=0.0625"), False)
SHORTCUT_FLOW_WARMUP = Method("shortcut_flow_warmup_half", "Shortcut, flow matching alone for the first half of the steps",
                              ("objective=shortcut", "objective.flow_warmup=0.5"), False)
METHODS = [
    SHORTCUT,
    Method("shortcut_paper", "Shortcut (paper settings)", PAPER_SHORTCUT),
    Method("flow_matching", "Flow matching", ("objective=flow_matching",)),
    Method("meanflow", "MeanFlow", ("objective=meanflow",)),
    Method("meanflow_mse", "MeanFlow (squared error)", ("objective=meanflow", "objective.adaptive_p=0")),
    Method("improved_meanflow", "Improved MeanFlow", ("objective=improved_meanflow",)),
    Method("explicit_shortcut", "Explicit shortcut (ESC)", ("objective=explicit_shortcut",)),
    # Variants of the two baselines, each one option away from its defaults.
    Method("shortcut_flow_rows_rest", "Shortcut, disjoint parts (flow_rows=rest)", ("objective=shortcut", "objective.flow_rows=rest"), False),
    Method("shortcut_logit_normal", "Shortcut, disjoint parts, logit-normal t",
           ("objective=shortcut", "objective.flow_rows=rest", "objective.t_sampling=logit_normal"), False),
    Method("shortcut_sixteenth", "Shortcut, 1/16 bootstrap", ("objective=shortcut", "objective.bootstrap_fraction=0.0625"), False),
    Method("shortcut_quarter", "Shortcut, 1/4 bootstrap", ("objective=shortcut", "objective.bootstrap_fraction=0.25"), False),
    # Level shares proportional to (1/4)^j instead of (1/2)^j: three quarters of the self-consistency rows train one step.
    Method("shortcut_one_step_levels", "Shortcut, level shares decaying by 1/4", ("objective=shortcut", "objective.level_decay=0.25"),
           False),
    # Fewer trained sizes: the finest (Heun's step on the d = 0 velocity) is 1/16 or 1/8, so a one-step target
    # compounds the errors of fewer levels; the d = 0 rows keep the 1/128 time grid.
    Method("shortcut_sizes_16", "Shortcut, sizes 1/16 to 1", ("objective=shortcut", "objective.M=16", "objective.flow_grid=128"), False),
    Method("shortcut_sizes_8", "Shortcut, sizes 1/8 to 1", ("objective=shortcut", "objective.M=8", "objective.flow_grid=128"), False),
    # Loss weights on the self-consistency rows: weight w gives them the gradient share of w times the share, at this
    # share's compute (1 is the library default, Fashion-MNIST's is 4).
    Method("shortcut_bootstrap_weight_1", "Shortcut, self-consistency rows weighted 1", ("objective=shortcut", "objective.bootstrap_weight=1"),
           False),
    Method("shortcut_bootstrap_weight_2", "Shortcut, self-consistency rows weighted 2", ("objective=shortcut", "objective.bootstrap_weight=2"),
           False),
    Method("shortcut_bootstrap_weight_4", "Shortcut, self-consistency rows weighted 4", ("objective=shortcut", "objective.bootstrap_weight=4"),
           False),
    # Half the 1/8 share at twice the weight: the same expected gradient on the self-consistency rows (the d = 0 rows
    # are the whole batch either way) from half the bootstrap examples, for less extra compute per step.
    Method("shortcut_sixteenth_weight_2", "Shortcut, 1/16 bootstrap weighted 2",
           ("objective=shortcut", "objective.bootstrap_fraction=0.0625", "objective.bootstrap_weight=2"), False),
    Method("shortcut_sixteenth_weight_8", "Shortcut, 1/16 bootstrap weighted 8",
           ("objective=shortcut", "objective.bootstrap_fraction=0.0625", "objective.bootstrap_weight=8"), False),
    # The weight on the one-step size (d = 1) only, every finer size weighted 1.
    Method("shortcut_one_step_weight_4", "Shortcut, one-step size weighted 4",
           ("objective=shortcut", "objective.bootstrap_weight=4", "objective.bootstrap_weight_sizes=1"), False),
    Method("shortcut_one_step_weight_8", "Shortcut, one-step size weighted 8",
           ("objective=shortcut", "objective.bootstrap_weight=8", "objective.bootstrap_weight_sizes=1"), False),
    # ESC's plug-in velocity on half the d = 0 rows: the batch's marginal velocity, a lower-variance target for the
    # velocity that serves the many-step budgets and the finest self-consistency size; flow matching with the same.
    Method("shortcut_plug_in", "Shortcut, plug-in velocity on half the d = 0 rows", ("objective=shortcut", "objective.plug_in_fraction=0.5"),
           False),
    Method("flow_matching_plug_in", "Flow matching, plug-in velocity on half the rows",
           ("objective=flow_matching", "objective.plug_in_fraction=0.5"), False),
    Method("shortcut_plug_in_all", "Shortcut, plug-in velocity on every d = 0 row",
           ("objective=shortcut", "objective.plug_in_fraction=1"), False),
    Method("flow_matching_plug_in_all", "Flow matching, plug-in velocity on every row",
           ("objective=flow_matching", "objective.plug_in_fraction=1"), False),
    Method("shortcut_bootstrap_weight_4_plug_in", "Shortcut, self-consistency rows weighted 4, plug-in velocity",
           ("objective=shortcut", "objective.bootstrap_weight=4", "objective.plug_in_fraction=0.5"), False),
    # A curriculum: the first half (three quarters) of the steps train the d = 0 rows alone, at flow matching's step cost.
    SHORTCUT_FLOW_WARMUP,
    with_shortcut_queries(SHORTCUT_FLOW_WARMUP),
    Method("shortcut_flow_warmup_half_bootstrap_weight_4", "Shortcut, flow matching alone for the first half, then self-consistency weighted 4",
           ("objective=shortcut", "objective.flow_warmup=0.5", "objective.bootstrap_weight=4"), False),
    Method("shortcut_flow_warmup_three_quarters", "Shortcut, flow matching alone for the first three quarters of the steps",
           ("objective=shortcut", "objective.flow_warmup=0.75"), False),
    Method("shortcut_ema_teacher", "Shortcut, EMA teacher", ("objective=shortcut", "objective.bootstrap_ema=true"), False),
    Method("flow_matching_logit_normal", "Flow matching, logit-normal t", ("objective=flow_matching", "objective.t_sampling=logit_normal"),
           False),
    # The shortcut trains t on the 1/M grid, flow matching uniform t: each with the other's.
    Method("shortcut_uniform_t", "Shortcut, uniform t", ("objective=shortcut", "objective.t_sampling=uniform"), False),
    Method("flow_matching_grid_t", "Flow matching, t on the 1/128 grid", ("objective=flow_matching", "objective.t_sampling=grid"), False),
    with_shortcut_queries(SHORTCUT),
    SHORTCUT_ADAPTIVE,
    Method("shortcut_adaptive_all_rows", "Shortcut, adaptive weight (p = 1) on every row",
           ("objective=shortcut", "objective.adaptive_p=1", "objective.adaptive_rows=all"), False),
    Method("flow_matching_adaptive", "Flow matching, adaptive weight (p = 1)", ("objective=flow_matching", "objective.adaptive_p=1"), False),
    with_shortcut_queries(SHORTCUT_ADAPTIVE),
    SHORTCUT_PSEUDO_HUBER,
    Method("flow_matching_pseudo_huber", "Flow matching, adaptive weight (p = 1/2)", ("objective=flow_matching", "objective.adaptive_p=0.5"),
           False),
    with_shortcut_queries(SHORTCUT_PSEUDO_HUBER),
    SHORTCUT_PSEUDO_HUBER_SIXTEENTH,
    with_shortcut_queries(SHORTCUT_PSEUDO_HUBER_SIXTEENTH),
    Method("consistency", "Consistency training", ("objective=consistency",)),
    Method("consistency_distillation", "Consistency distillation", ("objective=consistency_distillation",)),
    Method("progressive", "Progressive distillation", ("objective=progressive",)),
    Method("reflow", "Live reflow", ("objective=reflow",)),
    Method("reflow_two_stage", "Two-stage reflow", ("objective=reflow_two_stage",)),
]
BY_KEY = {m.key: m for m in METHODS}

# Shared by every method of a domain: backbone, batch, total steps, evaluation size.
SETTINGS: dict[str, dict[str, list[str]]] = {
    "toy2d": {
        "full": ["domain=toy2d", "train.steps=5000"],
        "quick": ["domain=toy2d", "model.hidden=32", "model.depth=1", "train.batch_size=64", "train.steps=40", "train.warmup_steps=4",
                  "domain.eval_samples=256", "domain.flow_steps=50"],
    },
    "digits": {
        # The MLP predicts the clean digit (model.prediction=data) for every method: with the velocity
        # output the one-step samples of every objective stay noisy (see the reading in the results file).
        "full": ["domain=digits", "model=mlp", "model.hidden=256", "model.depth=3", "model.prediction=data",
                 "model.min_remaining=0.2", "train.batch_size=128", "train.steps=2500", "train.ema_decay=0.99"],
        "quick": ["domain=digits", "model=mlp", "model.hidden=32", "model.depth=1", "model.prediction=data",
                  "model.min_remaining=0.2", "train.batch_size=32", "train.steps=40", "train.warmup_steps=4",
                  "domain.eval_draws=1"],
    },
    "fmnist": {
        "full": ["experiment=fmnist_dit"],
        "quick": ["experiment=fmnist_dit", "model.hidden=32", "model.depth=1", "model.num_heads=2", "train.batch_size=16",
                  "train.steps=20", "train.warmup_steps=2", "domain.eval_samples=64"],
    },
}
PAIRS = {"full": (8192, 32), "quick": (256, 4)}  # two-stage reflow: pairs drawn and their Euler steps
COMMON = ["logging.progress=false", "train.ckpt_every=0", "train.log_every=50"]
METRICS = {"toy2d": ["swd", "flow_rmse"], "digits": ["fd", "class_acc"], "fmnist": ["fd_fmnist", "class_acc"]}  # the first is the goals'
LOWER_IS_BETTER = {"swd", "flow_rmse", "fd", "fd_fmnist"}
LABELS = {
    "swd": "sliced W2 to data",
    "flow_rmse": "RMS distance to the exact flow map of the same noise",
    "fd": "Fréchet distance (digit classifier features)",
    "fd_fmnist": "Fréchet distance (Fashion-MNIST classifier features)",
    "class_acc": "class accuracy of the samples (the classifier's)",
}


@dataclass
class RunResult:
    method: str
    seed: int
    total_steps: int
    train_wall_s: float
    eval_wall_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # every resolved setting, dotted keys (seed aside)
    machine: str = ""
    command: str = ""  # the command that made the run
    evaluator: str = ""  # the classifier judge's weights SHA-1, where the domain scores with one


def method_overrides(method: Method, budget: str) -> list[str]:
    extra = []
    if method.key == "reflow_two_stage":
        pairs, steps = PAIRS[budget]
        extra = [f"objective.pairs={pairs}", f"objective.pair_steps={steps}", f"objective.pair_batch={min(2048, pairs)}"]
    return [*method.overrides, *extra, *method.sampling]


def resolved_settings(overrides: list[str]) -> dict[str, Any]:
    """Every setting the overrides compose to, library defaults included (seed and run folder aside)."""
    return as_dict(compose_config([*overrides, "seed=0", "out_dir=."]))


def settings_tag(overrides: list[str]) -> str:
    """A hash of ``resolved_settings``."""
    return hashlib.sha1(json.dumps(resolved_settings(overrides), sort_keys=True, default=str).encode()).hexdigest()[:12]


def is_results_file(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()).get("runs"), list)
    except (OSError, ValueError, AttributeError):
        return False


def load_stored(paths: list[str]) -> list[RunResult]:
    """The runs of earlier results files that recorded their settings, each with the command and
    machine of the file that holds it unless it names its own."""
    runs = []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        recorded = [r for r in payload["runs"] if r.get("settings")]
        if len(recorded) < len(payload["runs"]):
            print(f"{path}: {len(payload['runs']) - len(recorded)} run(s) without recorded settings are not reused.", flush=True)
        runs += [RunResult(**{**r, "machine": r.get("machine") or payload["machine"], "command": r.get("command") or payload["command"]})
                 for r in recorded]
    return runs


def stored_run(stored: Sequence[RunResult], method: Method, seed: int, overrides: list[str],
               current: dict[str, Any] | None = None) -> RunResult | None:
    """A stored run of ``seed`` made with the settings these overrides compose to now (``current``),
    under this row's name. The settings decide, not the name a run was stored under: after a domain
    changes an objective's defaults, the row of the plain objective takes the runs of the row that
    set those values by hand. A setting the stored run predates counts at the objective's own default,
    which is what the run was made with, not a domain's default for it (``domain_objective``)."""
    current = current if current is not None else flatten(resolved_settings(overrides))
    choice = [o for o in overrides if o.startswith("objective=")][-1:]
    defaults = flatten(resolved_settings([o for o in overrides if not o.startswith("objective.")] + choice + ["~domain_objective"]))
    same = [r for r in stored if r.seed == seed and same_settings(r.settings, current, defaults)]
    kept = min(same, key=lambda r: r.method != method.key, default=None)  # this row's own run first
    return replace(kept, method=method.key) if kept else None


def run_dir_of(method: Method, seed: int, settings: list[str], budget: str, work: Path) -> Path:
    return work / method.key / f"seed{seed}_{settings_tag([*settings, *method_overrides(method, budget)])}"


def run_method(method: Method, seed: int, settings: list[str], budget: str, work: Path, fresh: bool,
               stored: Sequence[RunResult] = (), command: str = "") -> RunResult:
    """Train and evaluate one (method, seed), or take it from ``stored`` when a stored run of it
    has the current settings. Its folder is named by a hash of the composed config (library
    defaults included, so a changed default never reuses an older run): a repeated command reuses a
    finished result and resumes an interrupted training run. A sampling-only row trains nothing: it
    samples the final weights of its ``samples_of`` row (trained first if missing)."""
    overrides = [*settings, *method_overrides(method, budget)]
    current = flatten(resolved_settings(overrides))
    run_dir = run_dir_of(method, seed, settings, budget, work)
    cfg = compose_config([*overrides, f"seed={seed}", f"out_dir={run_dir}"])
    done = run_dir / "result.json"
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    if done.exists():  # the folder's name is the settings' hash; folders that predate the record get this command's
        earlier = RunResult(**json.loads(done.read_text()))
        return replace(earlier, settings=earlier.settings or current,
                       machine=earlier.machine or machine_description(), command=earlier.command or command,
                       evaluator=earlier.evaluator or judge_of(run_dir / "eval"))
    if not fresh and (kept := stored_run(stored, method, seed, overrides, current)) is not None:
        return kept
    run_dir.mkdir(parents=True, exist_ok=True)
    domain = build_domain(cfg)
    if method.samples_of:
        trained = BY_KEY[method.samples_of]
        trained_result = run_method(trained, seed, settings, budget, work, fresh=False, command=command)  # --fresh retrains it as a row of its own
        model = load(run_dir_of(trained, seed, settings, budget, work))
        graphdef, params, total_steps, train_wall = model.run.graphdef, model.params, trained_result.total_steps, trained_result.train_wall_s
        objective = plan_phases(cfg, domain)[-1].objective  # the sampler's plan comes from this row's settings
    else:
        start = time.perf_counter()
        phased = run_phases(cfg, domain, run_dir)
        train_wall = time.perf_counter() - start
        result = phased.result
        if result.preempted:  # a stopped run's weights are not the row's: nothing is evaluated or recorded
            raise SystemExit(f"[{method.key} seed {seed}] training stopped by a signal; rerun the same command to resume it.")
        graphdef, objective, total_steps = result.run.graphdef, result.run.objective, phased.total_steps
        params = result.state.ema_params if cfg.eval.ema else result.state.params
    start = time.perf_counter()
    sample_fn = make_sample_fn(graphdef, params, objective, tuple(domain.sample_shape), cfg_scale=cfg.sample.cfg_scale,
                               num_classes=domain.num_classes)
    metrics = domain.evaluate(sample_fn, STEPS, run_dir / "eval")
    domain.visualize(sample_fn, [1, 4, 128], run_dir / "eval")
    out = RunResult(method.key, seed, total_steps, train_wall, time.perf_counter() - start, metrics,
                    current, machine_description(), command, judge_of(run_dir / "eval"))
    done.write_text(json.dumps(vars(out), indent=1))
    print(f"[{method.key} seed {seed}] train {train_wall:.0f}s: "
          + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.split("@")[-1] in ("1", "4", "128") or "@" not in k), flush=True)
    return out


def judge_of(eval_dir: Path) -> str:
    """The SHA-1 of the classifier judge that scored an evaluation (its ``fd.json``), or "" where none did."""
    record = eval_dir / "fd.json"
    return json.loads(record.read_text()).get("judge_sha1", "") if record.is_file() else ""


def step_time_ratios(methods: list[Method], overrides: list[str], budget: str, rounds: int = 5, block: int = 20) -> dict[str, float]:
    """Seconds per training step of each method's final phase, interleaved, over flow matching's; a phase of
    several stages (``Objective.stages``) times each stage's step and weighs it by the stage's share of the steps."""
    steps, states, batches, shares = {}, {}, None, {}
    for method in methods:
        cfg = compose_config([*overrides, *method_overrides(method, budget), "seed=0"])
        domain = build_domain(cfg)
        phase = plan_phases(cfg, domain)[-1]
        run = build_run(cfg, domain, phase.objective)
        if batches is None:
            stream = encoded_batches(domain, cfg.train.batch_size, 999, 0)
            batches = [next(stream) for _ in range(block)]
        data = batches
        if phase.prepare_data is not None:  # two-stage reflow trains on stored (noise, sample) pairs
            data = [{"x": b["x"], "cond": reflow.pack_pairs(np.random.default_rng(i).standard_normal(b["x"].shape, np.float32), b["cond"])}
                    for i, b in enumerate(batches)]
        teacher = run.state.params if phase.uses_teacher else None
        stages = run.objective.stages()
        ends = [start for start, _ in stages[1:]] + [phase.steps]
        for k, (start, objective) in enumerate(stages):
            key = method.key if len(stages) == 1 else f"{method.key}#{k}"
            shares.setdefault(method.key, []).append((key, (ends[k] - start) / phase.steps))
            step = jax.jit(make_train_step(run.graphdef, objective, run.tx, ema_decay=cfg.train.ema_decay))
            steps[key] = lambda state, i, step=step, teacher=teacher, data=data: step(state, data[i], teacher)
            states[key] = run.state
    times, _ = interleaved_step_times(steps, states, list(range(block)), rounds=rounds)
    per_round = {method: [sum(share * times[key][r] for key, share in parts) for r in range(rounds)] for method, parts in shares.items()}
    return {method: median_ratio(t, per_round["flow_matching"])[0] for method, t in per_round.items()}


# ---------------------------------------------------------------------------------------- statistics


def stats(results: list[RunResult], method: str, key: str) -> tuple[float, float, int]:
    values = [r.metrics[key] for r in results if r.method == method and key in r.metrics]
    if not values:
        return float("nan"), float("nan"), 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def cell(results: list[RunResult], method: str, key: str) -> str:
    mean, std, n = stats(results, method, key)
    return fmt(mean) if n <= 1 else f"{fmt(mean)} ± {fmt(std)}"


def goals(results: list[RunResult], methods: list[str], domain: str, ratios: dict[str, float], row: str = "shortcut") -> list[str]:
    """The goals, computed for the shortcut row ``row``: at every budget against flow matching, monotone in the
    budget, one step near its best budget; for the default row also the best one-step row against the paper's settings."""
    name = METRICS[domain][0]
    if row not in methods:
        return [f"- None computed: every goal is about the `{row}` row, which this run does not have."]
    lines: list[str] = []
    label = BY_KEY[row].label

    def mean(m: str, n: int) -> float:
        return stats(results, m, f"{name}@{n}")[0]

    def std(m: str, n: int) -> float:
        return stats(results, m, f"{name}@{n}")[1]

    if "flow_matching" in methods:
        worse = []
        for n in STEPS:
            slack = max(std(row, n), std("flow_matching", n)) if n >= 64 else 0.0
            if mean(row, n) > mean("flow_matching", n) + slack:
                worse.append(n)
        lines.append(f"- {label} at most flow matching's {name} at every budget (within one seed std at 64 and 128): "
                     + ("**met**." if not worse else f"**not met** at {worse}."))
    rises = [(a, b) for a, b in zip(STEPS, STEPS[1:]) if mean(row, b) > mean(row, a) + max(std(row, a), std(row, b))]
    lines.append(f"- {label} {name} non-increasing in the budget within one seed std: "
                 + ("**met**." if not rises else f"**not met** ({', '.join(f'{a}->{b}' for a, b in rises)})."))
    best = min(mean(row, n) for n in STEPS)
    ratio = mean(row, 1) / best
    lines.append(f"- {label} {name}@1 / its best budget = {ratio:.2f} (goal at most 1.3): **{'met' if ratio <= 1.3 else 'not met'}**.")
    one_step = {m: mean(m, 1) for m in methods}
    winner = min(one_step, key=one_step.get)
    if row == "shortcut" and "shortcut_paper" in methods:
        beats = one_step[winner] < one_step["shortcut_paper"]
        lines.append(f"- Best one-step row: {BY_KEY[winner].label} ({one_step[winner]:.4f}) against the shortcut paper's settings "
                     f"({one_step['shortcut_paper']:.4f}): **{'met' if beats else 'not met'}**.")
    if domain == "toy2d" and "flow_matching" in methods:
        sc1, fm128 = stats(results, row, "flow_rmse@1")[0], stats(results, "flow_matching", "flow_rmse@128")[0]
        lines.append(f"- {label} 1-step RMS to the exact flow map {sc1:.4f} within 1.5x of flow matching's 128-step {fm128:.4f}: "
                     f"**{'met' if sc1 <= 1.5 * fm128 else 'not met'}** ({sc1 / fm128:.2f}x).")
    if row in ratios:
        lines.append(f"- {label} training step time / flow matching = {ratios[row]:.3f} (goal at most 1.10): "
                     f"**{'met' if ratios[row] <= 1.10 else 'not met'}**.")
    if domain == "fmnist" and "flow_matching" in methods:
        lines.append(f"- {label} fd@1 / its fd@128 = {mean(row, 1) / mean(row, 128):.2f} (goal at most 1.5): "
                     f"**{'met' if mean(row, 1) <= 1.5 * mean(row, 128) else 'not met'}**.")
        better = [n for n in (1, 2, 4) if mean(row, n) < mean("flow_matching", n)]
        lines.append(f"- {label} better than flow matching at 1, 2 and 4 steps: **{'met' if len(better) == 3 else 'not met'}** (better at {better}).")
        within = mean(row, 128) <= 1.1 * mean("flow_matching", 128)
        lines.append(f"- {label} within 10% of flow matching at 128 steps ({mean(row, 128):.4f} vs {mean('flow_matching', 128):.4f}): "
                     f"**{'met' if within else 'not met'}**.")
    return lines


def recommendations(results: list[RunResult], methods: list[str], domain: str) -> list[str]:
    name = METRICS[domain][0]
    lines = []
    for label, budgets in (("1 step", [1]), ("4 steps", [4]), ("many steps (64-128)", [64, 128])):
        scores = {m: float(np.mean([stats(results, m, f"{name}@{n}")[0] for n in budgets])) for m in methods}
        best = min(scores, key=scores.get)
        lines.append(f"- {label}: {BY_KEY[best].label} ({scores[best]:.4f}).")
    return lines


def plot(results: list[RunResult], methods: list[str], domain: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = METRICS[domain]
    fig, axes = plt.subplots(1, len(names), figsize=(5.4 * len(names), 3.9), squeeze=False)
    for ax, name in zip(axes[0], names):
        for m in methods:
            means = np.array([stats(results, m, f"{name}@{n}")[0] for n in STEPS])
            stds = np.array([stats(results, m, f"{name}@{n}")[1] for n in STEPS])
            line = ax.plot(STEPS, means, marker="o", ms=3, label=BY_KEY[m].label, lw=2.2 if m == "shortcut" else 1.1)[0]
            ax.fill_between(STEPS, means - stds, means + stds, color=line.get_color(), alpha=0.15)
        floor = stats(results, methods[0], f"{name}_floor")[0]
        if floor == floor:
            ax.axhline(floor, color="k", ls="--", lw=0.8, label="floor (real vs real)")
        ax.set_xscale("log", base=2)
        if name in LOWER_IS_BETTER:
            ax.set_yscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(LABELS[name], fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_of(run: RunResult) -> str:
    return run.machine or machine_description()  # runs that predate the record were made on this machine


def machines_line(results: list[RunResult]) -> str:
    """The machines the runs were made on, each with its runs where there are several."""
    machines = list(dict.fromkeys(machine_of(r) for r in results))
    if len(machines) == 1:
        return f"Machine: {machines[0]}."
    return "Machines: " + "; ".join(f"{name} ({runs_named([r for r in results if machine_of(r) == name])})" for name in machines) + "."


def wall_cell(results: list[RunResult], method: str) -> str:
    """Mean training wall time of a method's runs, one per machine in the order of ``machines_line``
    (absolute times of two machines do not average)."""
    machines = list(dict.fromkeys(machine_of(r) for r in results))
    walls = [[r.train_wall_s for r in results if r.method == method and machine_of(r) == name] for name in machines]
    return " / ".join(f"{statistics.mean(w):.0f}" for w in walls if w)


def runs_named(runs: list[RunResult]) -> str:
    """``Shortcut seeds 0, 1; MeanFlow seed 2``."""
    seeds: dict[str, list[int]] = {}
    for r in runs:
        seeds.setdefault(BY_KEY[r.method].label, []).append(r.seed)
    return "; ".join(f"{label} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))}" for label, s in seeds.items())


def provenance(results: list[RunResult], command: str) -> list[str]:
    """Lines naming the runs this command took from earlier results files, with the commands that made them."""
    others = list(dict.fromkeys(r.command for r in results if r.command and r.command != command))
    if not others:
        return []
    lines = ["Runs taken from stored results (`--stored`), made with the same settings by:", ""]
    lines += [f"- `{other}`: {runs_named([r for r in results if r.command == other])}" for other in others]
    return [*lines, ""]


def evaluators_differ(results: list[RunResult], metric: str) -> str | None:
    """Where runs were scored by different evaluators, which: a classifier judge retrained on another
    CPU gives other features, and distances measured in different features do not compare. Runs that
    name their judge are told apart by its SHA-1; older runs by their floor (real against real)."""
    judges, floors = group_runs(results, lambda r: r.evaluator[:12]), group_runs(results, lambda r: r.metrics.get(f"{metric}_floor"))
    if len(judges) > 1:
        return "; ".join(f"judge {judge}: {runs_named(runs)}" for judge, runs in judges.items())
    if len(floors) > 1:
        return "; ".join(f"floor {floor:g}: {runs_named(runs)}" for floor, runs in floors.items())
    return None


def group_runs(results: list[RunResult], value_of: Any) -> dict[Any, list[RunResult]]:
    """Runs by ``value_of(run)`` (floats rounded to 6 decimals), leaving out runs without one (None or "")."""
    groups: dict[Any, list[RunResult]] = {}
    for r in results:
        value = value_of(r)
        if value is not None and value != "":
            groups.setdefault(round(value, 6) if isinstance(value, float) else value, []).append(r)
    return groups


def effective_overrides(overrides: list[str]) -> list[str]:
    """The overrides as Hydra applies them: where a key is set twice (a domain default, then ``--set``), only the last
    setting, in its place; so the printed setting is the one the runs trained with."""
    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")
    last = {key(o): i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[key(o)] == i]


def write_report(results: list[RunResult], methods: list[str], domain: str, budget: str, command: str, overrides: list[str],
                 ratios: dict[str, float], out: Path, name: str) -> Path:
    md, png = out / f"{name}.md", out / f"{name}.png"
    plot(results, methods, domain, png)
    notes = md.read_text()[md.read_text().index("## Reading"):] if md.exists() and "## Reading" in md.read_text() else ""
    seeds = sorted({r.seed for r in results})
    lines = [
        f"# Every objective at every budget: {domain} ({budget} budget)",
        "",
        machines_line(results),
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        *provenance(results, command),
        f"Shared setting (every method, seeds {', '.join(map(str, seeds))}): `{' '.join(effective_overrides(overrides))}`; evaluation of the EMA weights at "
        "1, 2, 4, ..., 128 Euler steps from the same noise. Two-phase methods spend half the steps on a flow-matching teacher "
        "(counted in the total). Cells: mean ± standard deviation over seeds.",
        "",
    ]
    for metric in METRICS[domain]:
        header = ["Method"] + [str(n) for n in STEPS]
        rows = [[BY_KEY[m].label] + [cell(results, m, f"{metric}@{n}") for n in STEPS] for m in methods]
        lines += [f"{LABELS[metric]} at each number of steps:", "", markdown_table(header, rows), ""]
        floor = stats(results, methods[0], f"{metric}_floor")
        if floor[2]:
            judges = sorted({r.evaluator for r in results if r.evaluator})
            judged = f" Scored by the classifier judge with weights SHA-1 {', '.join(judges)}." if judges else ""
            lines += [f"Floor (real data against the same reference, same sample size): {fmt(floor[0])}.{judged}", ""]
    rows = [[BY_KEY[m].label, f"{ratios[m]:.2f}x" if m in ratios else "– (not timed)", wall_cell(results, m)] for m in methods]
    # The timing always runs in this command, so on this machine, whichever machines trained the stored runs.
    timing = f"one interleaved timing run on {machine_description()}, median of blocks" if ratios else "not timed by this command"
    lines += [f"Training cost: step time relative to flow matching ({timing}) and wall time of "
              "the training run (mean over seeds; one mean per machine, in the order named above, where a row's seeds ran on "
              "several).", "", markdown_table(["Method", "step time / FM", "train wall (s)"], rows), ""]
    shared = [f"- {BY_KEY[m].label}: the weights of {BY_KEY[BY_KEY[m].samples_of].label} (trained once), sampled with "
              f"`{' '.join(BY_KEY[m].sampling)}`; its training cost is that row's." for m in methods if BY_KEY[m].samples_of]
    if shared:
        lines += ["Sampling-only rows:", "", *shared, ""]
    lines += [f"![quality vs sampling steps]({png.name})", "", "Goals (computed):", "", *goals(results, methods, domain, ratios), ""]
    variants = [m for m in methods if m.startswith("shortcut_") and m != "shortcut_paper"]
    if "shortcut" in methods and variants:
        lines += ["The same goals for the other shortcut rows:", ""]
        lines += [line for m in variants for line in goals(results, methods, domain, ratios, row=m)] + [""]
    lines += ["Best objective by budget (lowest mean of the first metric):", "", *recommendations(results, methods, domain), ""]
    if notes:
        lines += [notes.rstrip(), ""]
    md.write_text("\n".join(lines))
    payload = {"machine": machine_description(), "command": command, "overrides": overrides, "ratios": ratios,
               "runs": [vars(r) for r in results], "methods": methods, "metrics": METRICS[domain]}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--quick", action="store_true", help="tiny smoke setting (seconds per method)")
    parser.add_argument("--methods", default=",".join(m.key for m in METHODS if m.by_default), help="comma-separated method keys")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides for every method")
    parser.add_argument("--no-timing", action="store_true", help="skip the interleaved step-time phase")
    parser.add_argument("--fresh", action="store_true", help="retrain runs whose results exist")
    parser.add_argument("--stored", nargs="*", default=[], metavar="JSON",
                        help="earlier results files whose runs with the current settings are taken instead of training")
    parser.add_argument("--name", default=None, help="results file name (default paper_table_<domain>)")
    parser.add_argument("--work-dir", default="runs/paper_table", help="where run folders go")
    parser.add_argument("--out", default=str(RESULTS), help="where the table, plot and json go")
    args = parser.parse_args(argv)
    for path in args.stored:
        if not is_results_file(Path(path)):
            parser.error(f"--stored {path}: not a results json of this script (benchmarks/results/<name>.json, with a 'runs' list).")

    budget = "quick" if args.quick else "full"
    overrides = [*SETTINGS[args.domain][budget], *COMMON, *args.set]
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(BY_KEY))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; accepted: {', '.join(BY_KEY)}")
    if "flow_matching" not in wanted:
        wanted.insert(0, "flow_matching")  # the time reference and the goals' baseline
    methods = [m.key for m in METHODS if m.key in wanted]
    work = Path(args.work_dir) / f"{args.domain}_{budget}"
    command = "python -m benchmarks.paper_table " + " ".join(argv if argv is not None else sys.argv[1:])
    stored = load_stored(args.stored)
    results = [run_method(BY_KEY[m], seed, overrides, budget, work, args.fresh, stored, command) for seed in args.seeds for m in methods]
    if (differ := evaluators_differ(results, METRICS[args.domain][0])) is not None:
        print(f"The runs were scored by different evaluators ({differ}), so their distances do not compare: score every run with one "
              "judge (the package ships the Fashion-MNIST one; runs made before it did were scored by a judge trained on their own "
              "machine and cannot join runs scored by it), or leave out --stored.", file=sys.stderr)
        return 1
    sources = {m: BY_KEY[m].samples_of or m for m in methods}  # a sampling-only row's training is its source row's
    timed = [m for m in METHODS if m.key in sources.values()]
    source_ratios = {} if args.no_timing else step_time_ratios(timed, overrides, budget)
    ratios = {m: source_ratios[source] for m, source in sources.items() if source in source_ratios}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = write_report(results, methods, args.domain, budget, command, overrides, ratios, out, args.name or f"paper_table_{args.domain}")
    print(f"Wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
