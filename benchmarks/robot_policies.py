"""Shortcut, flow-matching and MSE behaviour-cloning policies on the robot tasks: closed-loop
success at 1, 2, 4 and 128 sampling steps, action-chunk latency, and the experts' own success.

    python benchmarks/robot_policies.py [--tasks reacher,pointmaze_medium] [--steps N] [--episodes 100] [--seeds 0 1 2] [--quick]

For every task the three policies share the demonstrations, backbone, batch size, optimizer
and step count (``configs/domain/robot.yaml`` and ``configs/model/robot.yaml`` unless
``--set key=value`` overrides them); they differ only in ``objective``. Each is evaluated
on the same ``--episodes`` evaluation episodes (same reset seeds, same sampling seed).
Results accumulate per task in ``results/robot_policies.json``, so tasks can be run in
separate invocations; the markdown table is rebuilt from it every time. With several training
seeds a cell is the mean ± std over them; ``--seeds 1 2`` adds seeds to the stored seed 0 when
every setting matches, so seeds can be run in separate invocations too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import same_settings  # noqa: E402
from benchmarks.machine import describe_machine  # noqa: E402
from shortcutlib.config import as_dict, compose_config  # noqa: E402
from shortcutlib.inference import make_sample_fn  # noqa: E402
from shortcutlib.run import build_domain  # noqa: E402
from shortcutlib.train.loop import build_run, train  # noqa: E402

TASKS = ("reacher", "pointmaze_medium", "pointmaze_large", "cube_single")
# OGBench manipulation, goal-conditioned, data by OGBench's procedure: --name ogbench --tasks ...
OGBENCH_TASKS = ("ogbench_cube_single", "cube_double", "scene", "puzzle_3x3")
ALL_TASKS = TASKS + OGBENCH_TASKS
# Published goal-conditioned BC on the official play datasets, % success (OGBench paper, Park et al.,
# ICLR 2025, Table 2).
PUBLISHED_GCBC = {"ogbench_cube_single": 6.0, "cube_double": 1.0, "scene": 5.0, "puzzle_3x3": 2.0}
# objective -> the step budgets it is evaluated at (BC is one deterministic step by construction).
METHODS = {"shortcut": [1, 2, 4, 128], "flow_matching": [1, 2, 4, 128], "bc": [1]}
LABELS = {"shortcut": "shortcut", "flow_matching": "flow matching", "bc": "MSE BC"}
SHORT = {"shortcut": "sc", "flow_matching": "fm", "bc": "BC"}  # column names sc@n, fm@n; seeds cells
SUMMED = ("train_s", "eval_s")  # over seeds: wall time adds up; every other number is averaged
SAMPLED = ("shortcut", "flow_matching")  # methods whose policies start from noise
QUICK_STEPS, QUICK_EPISODES = 300, 10


def scaled_key(key: str, noise_scale: float) -> str:
    """Metric key of an evaluation whose initial noise was scaled, e.g. 'success@1|noise=0'."""
    return f"{key}|noise={noise_scale:g}"


def parse_scales(text: str) -> list[float]:
    """'0,0.5' -> [0.0, 0.5]: the extra initial-noise scales (1, plain sampling, is always evaluated)."""
    scales = [float(v) for v in text.split(",") if v.strip()]
    if any(v < 0 for v in scales):
        raise ValueError(f"noise scales must be >= 0 (got {text!r})")
    return [v for v in scales if v != 1.0]


def task_overrides(task: str, args: argparse.Namespace) -> list[str]:
    overrides = [
        "domain=robot",
        f"task={task}",
        f"domain.rollout.num_episodes={args.episodes}",
        "train.ckpt_every=0",
        "logging.progress=false",
    ]
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    return overrides + list(args.set)


def expert_success(domain: Any) -> float | None:
    """The scripted expert's success rate over the collected demonstrations (local datasets only)."""
    from domains.robot.domain import MANIFEST, _local_cache_dir

    manifest = _local_cache_dir(domain.cfg) / MANIFEST
    if domain.cfg.source != "local" or not manifest.is_file():  # OGBench's play data has no success to report
        return None
    return float(json.loads(manifest.read_text())["collect"]["success_rate"])


def evaluation_episodes(domain: Any) -> int:
    """Episodes per evaluation: per task times the tasks where the task has evaluation tasks (OGBench)."""
    rollout, tasks = domain.cfg.rollout, domain.spec.num_eval_tasks
    return rollout.episodes_per_task * tasks if (tasks and rollout.episodes_per_task) else rollout.num_episodes


def single_obs_latency_ms(sample_fn: Any, domain: Any, num_steps: int, calls: int = 100) -> float:
    """Median wall time of one policy call on a single observation history (compiled beforehand)."""
    cond = domain.sample_cond(1, seed=0)
    key = jax.random.key(0)
    np.asarray(sample_fn(key, num_steps, num_samples=1, cond=cond))
    times = []
    for i in range(calls):
        start = time.perf_counter()
        np.asarray(sample_fn(jax.random.fold_in(key, i), num_steps, num_samples=1, cond=cond))
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run_task(task: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    overrides = task_overrides(task, args)
    start_task = time.perf_counter()
    base_cfg = compose_config(overrides + ["objective=shortcut"])
    start = time.perf_counter()
    domain = build_domain(base_cfg)  # collects the demonstrations on first use
    data_s = time.perf_counter() - start
    entry: dict[str, Any] = {
        "overrides": overrides,
        "expert_success": expert_success(domain),
        "num_train_episodes": int(domain.train_episodes.num_episodes),
        "action_noise": domain.cfg.action_noise,
        "dataset_type": domain.cfg.ogbench.dataset_type if task in OGBENCH_TASKS else None,
        "episodes": evaluation_episodes(domain),
        "train": {k: getattr(base_cfg.train, k) for k in ("steps", "batch_size", "lr", "schedule", "warmup_steps", "ema_decay")},
        "model": as_dict(base_cfg.model),
        "windows": {k: getattr(domain.cfg, k) for k in ("obs_horizon", "horizon", "action_horizon")},
        "norm": {k: getattr(domain.cfg, k) for k in ("obs_norm", "action_norm")},
        "data_s": data_s,
        "methods": {},
    }
    for method in args.methods:
        per_seed = {}
        for seed in args.seeds:
            per_seed[str(seed)] = train_and_evaluate(task, method, seed, overrides, domain, args, work)
            print(f"[{task}] {method} seed {seed}: " + json.dumps({k: round(v, 4) for k, v in per_seed[str(seed)].items()}), flush=True)
        objective = as_dict(compose_config(overrides + [f"objective={method}"]).objective)
        entry["methods"][method] = combine_seeds(per_seed, objective)
    entry["wall_s"] = time.perf_counter() - start_task
    return entry


def train_and_evaluate(task: str, method: str, seed: int, overrides: list[str], domain: Any, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """One policy: trained from scratch with this seed, evaluated at its budgets; its numbers."""
    budgets = METHODS[method]
    cfg = compose_config(overrides + [f"objective={method}", f"seed={seed}"])
    tag = hashlib.sha1(json.dumps(overrides).encode()).hexdigest()[:8]
    run_dir = work / f"{task}_{method}_{tag}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time: no resuming from older settings
    run = build_run(cfg, domain)
    start = time.perf_counter()
    out = train(cfg, domain, run_dir, run=run)
    train_s = time.perf_counter() - start
    sample_fn = make_sample_fn(run.graphdef, out.state.ema_params, run.objective, tuple(domain.sample_shape))
    start = time.perf_counter()
    metrics = domain.evaluate(sample_fn, budgets, run_dir / "samples", noise_scale=1.0)
    if method in SAMPLED:  # the same weights with scaled initial noise; BC starts from zeros
        for scale in args.noise_scales:
            scaled = domain.evaluate(sample_fn, budgets, run_dir / "samples", noise_scale=scale)
            metrics.update({scaled_key(k, scale): v for k, v in scaled.items()})
    eval_s = time.perf_counter() - start
    return {
        **{k: float(v) for k, v in metrics.items()},
        "latency_1obs_ms@1": single_obs_latency_ms(sample_fn, domain, 1),
        "train_s": train_s,
        "eval_s": eval_s,
        "steps_per_sec": float(out.steps_per_sec),
        "final_loss": _final_loss(run_dir / "metrics.jsonl"),
    }


def combine_seeds(per_seed: dict[str, dict[str, float]], objective: dict[str, Any]) -> dict[str, Any]:
    """A method's row: the mean over seeds of every number measured for all of them (wall times
    summed), the per-seed numbers (for the std) and the objective's settings."""
    numeric = [{k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} for m in per_seed.values()]
    shared = set.intersection(*numeric)
    row: dict[str, Any] = {}
    for key in (k for k in next(iter(per_seed.values())) if k in shared):  # the first seed's key order
        values = [m[key] for m in per_seed.values()]
        row[key] = float(sum(values)) if key in SUMMED else float(np.mean(values))
    return {**row, "objective": objective, "per_seed": {seed: per_seed[seed] for seed in sorted(per_seed, key=int)}}


def _final_loss(path: Path) -> float:
    losses = [json.loads(line).get("loss") for line in path.read_text().splitlines()]
    losses = [v for v in losses if v is not None]
    return float(losses[-1]) if losses else float("nan")


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def success_cell(row: dict[str, Any] | None, key: str) -> str:
    """'12%' for one seed, '12 ± 3%' (mean ± sample std) over several, '–' where it was not measured."""
    if not row or row.get(key) is None:
        return "–"
    seeds = [m.get(key) for m in row.get("per_seed", {}).values()]
    if len(seeds) < 2 or any(v is None for v in seeds):
        return pct(row[key])
    return f"{100 * np.mean(seeds):.0f} ± {100 * np.std(seeds, ddof=1):.0f}%"


def seeds_of(row: dict[str, Any]) -> list[str]:
    """The training seeds behind a row (rows stored before seeds were recorded are seed 0)."""
    return list(row.get("per_seed", {"0": None}))


def seeds_cell(methods: dict[str, Any]) -> str:
    """The number of training seeds behind a task's rows: '3', or 'sc 3, fm 1, BC 1' while the
    methods' rows have different numbers (seeds are added one method at a time)."""
    counts = {method: len(seeds_of(row)) for method, row in methods.items()}
    if len(set(counts.values())) <= 1:
        return str(next(iter(counts.values()), "–"))
    return ", ".join(f"{SHORT[method]} {n}" for method, n in counts.items())


def ms(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def task_of(key: str) -> str:
    """The task of a result key, "task" or "task [label]"."""
    return key.split(" ")[0]


def ordered(results: dict[str, Any]) -> list[str]:
    """Result keys ("task" or "task [label]") in the order of TASKS."""
    return sorted(results, key=lambda key: (ALL_TASKS.index(task_of(key)), key))


def shortcut_settings(row: dict[str, Any] | None) -> str:
    """The shortcut options that changed over the results' history, as a settings fragment."""
    if row is None:
        return ""
    objective = row.get("objective", {})
    return (f"; shortcut level_decay {objective.get('level_decay', 1.0):g}, bootstrap_ema {objective.get('bootstrap_ema')}, "
            f"flow_rows {objective.get('flow_rows', 'rest')}")


def extra_scales(results: dict[str, Any]) -> list[float]:
    """The initial-noise scales other than 1 that some stored row was evaluated at."""
    found = {
        float(key.rpartition("|noise=")[2])
        for entry in results.values()
        for row in entry["methods"].values()
        for key in row
        if "|noise=" in key
    }
    return sorted(found)


def goals(task: str, methods: dict[str, Any], dataset_type: str | None = "play") -> list[str]:
    """The robot goals for one task: the one-step shortcut policy against flow matching's best budget
    (minus 3 points), against its own 128 steps (x 0.95), and against published GCBC (OGBench tasks);
    each policy at its better mode, sampled or deterministic, chosen on the means. With several
    seeds the first two also count the seeds on which the shortcut's cell is ahead of, level with or
    behind the cell it is compared with, since a mean over three seeds can hide a split. The
    published numbers are on the play datasets, so other dataset types are not compared with them."""
    sc, fm = methods.get("shortcut"), methods.get("flow_matching")
    if sc is None:
        return []

    def best_key(row: dict[str, Any], n: int) -> str:
        return max((f"success@{n}", scaled_key(f"success@{n}", 0.0)), key=lambda key: row.get(key, 0.0))

    def pct_at(row: dict[str, Any], key: str) -> float:
        return 100 * row.get(key, 0.0)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    def points(value: float) -> str:  # one decimal where rounding would hide why a goal failed
        return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"

    one_key = best_key(sc, 1)
    one = pct_at(sc, one_key)
    lines = []
    if fm is not None:
        fm_key = max((best_key(fm, n) for n in METHODS["flow_matching"]), key=lambda key: fm.get(key, 0.0))
        fm_best = pct_at(fm, fm_key)
        lines.append(f"- {task}: one-step shortcut {points(one)}% ≥ flow matching's best budget {points(fm_best)}% − 3: "
                     f"{verdict(one >= fm_best - 3)}{by_seed(sc, one_key, fm, fm_key)}.")
    own_key = best_key(sc, 128)
    own = pct_at(sc, own_key)
    lines.append(f"- {task}: one-step shortcut {points(one)}% ≥ 0.95 × its 128-step {points(own)}%: "
                 f"{verdict(one >= 0.95 * own)}{by_seed(sc, one_key, sc, own_key)}.")
    published = PUBLISHED_GCBC.get(task_of(task)) if dataset_type in ("play", None) else None
    if published is not None:
        lines.append(f"- {task}: one-step shortcut {points(one)}% ≥ published GCBC {published:.0f}%: {verdict(one >= published)}.")
    return lines


def by_seed(row: dict[str, Any], key: str, other: dict[str, Any], other_key: str) -> str:
    """' (by seed: ahead on a, level on b, behind on c)': ``row``'s cell against ``other``'s on
    the seeds both measured; empty with fewer than two such seeds."""
    mine, theirs = row.get("per_seed", {}), other.get("per_seed", {})
    seeds = [s for s in mine if s in theirs and mine[s].get(key) is not None and theirs[s].get(other_key) is not None]
    if len(seeds) < 2:
        return ""
    gaps = [round(100 * (mine[s][key] - theirs[s][other_key]), 6) for s in seeds]
    ahead, behind = sum(g > 0 for g in gaps), sum(g < 0 for g in gaps)
    return f" (by seed: ahead on {ahead}, level on {len(gaps) - ahead - behind}, behind on {behind})"


def seeds_by_machine(entry: dict[str, Any], machine: str) -> dict[str, dict[str, list[str]]]:
    """The seeds of a row by the machine that ran them, per method: each seed's origin names its
    machine; a seed stored before origins did is the row's (``machine`` for rows that name none)."""
    fallback = entry.get("machine", machine)
    on: dict[str, dict[str, list[str]]] = {}
    for method, row in entry["methods"].items():
        for seed, record in seed_records(row, entry, method).items():
            on.setdefault(record.get("origin", {}).get("machine", fallback), {}).setdefault(method, []).append(seed)
    return {name: {m: sorted(seeds, key=int) for m, seeds in by_method.items()} for name, by_method in on.items()} or {fallback: {}}


def seeds_phrase(by_method: dict[str, list[str]]) -> str:
    """'seeds 0, 1' when every method ran the same seeds on a machine, else each method's."""
    def seeds(items: list[str]) -> str:
        return f"seed{'s' if len(items) > 1 else ''} {', '.join(items)}"
    if len({tuple(v) for v in by_method.values()}) == 1:
        return seeds(next(iter(by_method.values())))
    return " / ".join(f"{LABELS[m]} {seeds(v)}" for m, v in by_method.items())


def machines_line(results: dict[str, Any], machine: str) -> str:
    """The machines the stored rows ran on, so that a file rendered on one machine does not claim rows
    measured on another; a row whose seeds ran on several machines is named under each with its seeds."""
    tasks_on: dict[str, list[str]] = {}
    for task in ordered(results):
        on = seeds_by_machine(results[task], machine)
        for name, by_method in on.items():
            tasks_on.setdefault(name, []).append(task if len(on) == 1 else f"{task} {seeds_phrase(by_method)}")
    if len(tasks_on) <= 1:
        return f"Machine: {next(iter(tasks_on), machine)}."
    return "Machines: " + "; ".join(f"{name} ({', '.join(tasks)})" for name, tasks in tasks_on.items()) + "."


def render(results: dict[str, Any], machine: str, name: str, not_run: dict[str, str], notes: list[str]) -> str:
    lines = [
        "# Robot policies: shortcut vs flow matching vs MSE behaviour cloning",
        "",
        machines_line(results, machine),
        "",
        "Success rate over the evaluation episodes (closed loop in MuJoCo; reset seeds from the evaluation stream, "
        "so no episode was seen in the demonstrations). Every policy of a task shares the demonstrations, backbone, "
        "batch, optimizer and step count; the policies differ only in the objective. `sc@n` / `fm@n` = shortcut / "
        "flow matching sampled with n Euler steps; BC is one deterministic step. With several training seeds a cell is "
        "the mean ± sample std over them.",
        "",
        "| task | expert | episodes | seeds | " + " | ".join(f"{SHORT[m]}@{n}" for m in SAMPLED for n in METHODS[m]) + " | MSE BC |",
        "|---|---|---|---|" + "---|" * (sum(len(METHODS[m]) for m in SAMPLED) + 1),
    ]
    for task in ordered(results):
        r = results[task]
        m = r["methods"]
        cells = [seeds_cell(m)]
        cells += [success_cell(m.get(meth), f"success@{n}") for meth in METHODS for n in METHODS[meth]]
        lines.append(f"| {task} | {pct(r['expert_success'])} | {r['episodes']} | " + " | ".join(cells) + " |")
    for scale in extra_scales(results):
        lines += [
            "",
            f"The same sampled policies (same weights, same episodes) with the initial noise x0 scaled by {scale:g}"
            + (" (a deterministic policy: every chunk starts from the noise mean)" if scale == 0 else "")
            + "; '–' where that evaluation was not run.",
            "",
            "| task | " + " | ".join(f"{SHORT[m]}@{n} x{scale:g}" for m in SAMPLED for n in METHODS[m]) + " | MSE BC |",
            "|---|" + "---|" * (sum(len(METHODS[m]) for m in SAMPLED) + 1),
        ]
        for task in ordered(results):
            m = results[task]["methods"]
            cells = [success_cell(m.get(meth), scaled_key(f"success@{n}", scale)) for meth in SAMPLED for n in METHODS[meth]]
            cells.append(success_cell(m.get("bc"), "success@1"))
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Latency of one 1-step policy call (ms): on the batch of 10 environments stepped in lockstep during the rollouts "
        "(mean over the calls), and on a single observation history (median of 100 calls); jit compilation excluded.",
        "",
        "| task | shortcut, batch 10 | shortcut, 1 obs | flow matching, batch 10 | MSE BC, batch 10 | sc@128, batch 10 |",
        "|---|---|---|---|---|---|",
    ]
    for task in ordered(results):
        m = results[task]["methods"]
        cells = [("shortcut", "latency_ms@1", 2), ("shortcut", "latency_1obs_ms@1", 2), ("flow_matching", "latency_ms@1", 2)]
        cells += [("bc", "latency_ms@1", 2), ("shortcut", "latency_ms@128", 1)]
        lines.append(f"| {task} | " + " | ".join(ms(m.get(meth, {}).get(key), digits) for meth, key, digits in cells) + " |")
    lines += ["", "## Settings and wall times", ""]
    for task in ordered(results):
        r = results[task]
        t, w, mo = r["train"], r["windows"], r["model"]
        model = ", ".join(f"{k} {v}" for k, v in mo.items() if k != "dtype")
        lines.append(
            f"- **{task}**: {r['num_train_episodes']} training "
            + (f"episodes of OGBench's {r.get('dataset_type') or 'play'} data (its oracles, its procedure), goals relabelled as in GCBC"
               if task_of(task) in OGBENCH_TASKS
               else "demonstrations" + (f" (executed-action noise {r['action_noise']:g}, DART)" if r.get("action_noise") else " (clean expert)"))
            + f"; windows obs_horizon {w['obs_horizon']}, "
            f"horizon {w['horizon']}, action_horizon {w['action_horizon']}; normalisation: observations "
            f"{r['norm']['obs_norm']}, actions {r['norm']['action_norm']}; model {model}; {t['steps']} steps, batch "
            f"{t['batch_size']}, lr {t['lr']} ({t['schedule']}, warm-up {t['warmup_steps']}), EMA {t['ema_decay']}"
            + shortcut_settings(r["methods"].get("shortcut"))
            + ". "
            f"Command: `python benchmarks/robot_policies.py {r['command']}`. Wall time {r['wall_s'] / 60:.1f} min "
            f"(data {r['data_s']:.0f} s; "
            + "; ".join(
                f"{LABELS[k]} train {v['train_s']:.0f} s at {v['steps_per_sec']:.1f} steps/s, eval {v['eval_s']:.0f} s"
                + (f" over {len(seeds_of(v))} seeds" if len(seeds_of(v)) > 1 else "")
                for k, v in r["methods"].items()
            )
            + f"). Run at {r['finished']}."
            + earlier_seeds(r)
        )
    goal_lines = [line for task in ordered(results) for line in goals(task, results[task]["methods"], results[task].get("dataset_type", "play"))]
    if goal_lines:
        lines += ["", "## Goals (computed)", "", *goal_lines]
    if not_run:
        lines += ["", "## Not run", ""]
        lines += [f"- **{task}**: {why}" for task, why in not_run.items()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", f"Raw numbers: `{name}.json`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--steps", type=int, default=None, help="training steps per policy (default: train.steps of the config)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy and step budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (each policy is trained once per seed)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of the objectives (the table needs all three)"
    )
    parser.add_argument(
        "--noise-scales", default="0", type=parse_scales,
        help="extra initial-noise scales at which the sampled policies are also evaluated (same weights; '' for none)",
    )
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_STEPS} steps, {QUICK_EPISODES} episodes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override (repeatable)")
    parser.add_argument("--note", action="append", default=[], help="add a note to the results file and only rebuild the markdown")
    parser.add_argument("--label", default=None, help="store the results as 'task [label]', beside the default run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="results file stem (default robot_policies, or robot_policies_quick)")
    parser.add_argument(
        "--not-run", action="append", default=[], metavar="TASK=REASON",
        help="record why a task was not run (shown in the results file) and only rebuild the markdown",
    )
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(ALL_TASKS))
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {', '.join(ALL_TASKS)}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if set(args.methods) - set(METHODS):
        parser.error(f"unknown method(s) {sorted(set(args.methods) - set(METHODS))}; choose from {', '.join(METHODS)}")
    if args.quick:
        args.steps, args.episodes = QUICK_STEPS, QUICK_EPISODES
    name = args.name or ("robot_policies_quick" if args.quick else "robot_policies")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{name}.json", args.out / f"{name}.md"
    stored = json.loads(json_path.read_text()) if json_path.is_file() else {"results": {}}
    machine = describe_machine()
    if args.not_run or args.note:
        for item in args.not_run:
            task, _, reason = item.partition("=")
            stored.setdefault("not_run", {})[task] = reason
        stored.setdefault("notes", []).extend(args.note)
        json_path.write_text(json.dumps(stored, indent=1, default=str))
        tasks = []
    work = ROOT / "benchmarks" / ".cache" / "robot_policies_runs"  # git-ignored: checkpoints stay out of the repository
    for task in tasks:
        entry = run_task(task, args, work)
        command = [f"--tasks {task}"] + ([f"--name {args.name}"] if args.name else [])
        if args.episodes != parser.get_default("episodes"):
            command.append(f"--episodes {args.episodes}")
        if args.steps is not None:
            command.append(f"--steps {args.steps}")
        if args.seeds != [0]:
            command.append(f"--seeds {' '.join(map(str, args.seeds))}")
        if args.noise_scales != [0.0]:
            command.append(f"--noise-scales '{','.join(f'{v:g}' for v in args.noise_scales)}'")
        if list(args.methods) != list(METHODS):
            command.append(f"--methods {','.join(args.methods)}")
        command += [f"--set {s}" for s in args.set] + ([f'--label "{args.label}"'] if args.label else [])
        entry.update(command=" ".join(command), machine=machine, finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        for row in entry["methods"].values():
            for record in row["per_seed"].values():
                record["origin"] = {"command": entry["command"], "finished": entry["finished"], "machine": machine}
        # Re-read first: another invocation may have added a task meanwhile.
        stored = json.loads(json_path.read_text()) if json_path.is_file() else {"results": {}}
        key = f"{task} [{args.label}]" if args.label else task
        changed = changed_settings(stored["results"][key], entry) if key in stored["results"] else []
        if changed:  # the stored row's seeds leave this file: say so before writing
            print(f"{key}: settings {', '.join(changed)} differ from the stored row's; this run replaces that row "
                  f"(give --label to keep both)", file=sys.stderr)
        stored["results"][key] = merge_methods(stored["results"].get(key), entry)
        stored["results"] = {k: stored["results"][k] for k in ordered(stored["results"])}  # the tables' order
        stored.get("not_run", {}).pop(task, None)
        # Written after every task, so a later task that is interrupted loses nothing before it.
        json_path.write_text(json.dumps(stored, indent=1, default=str))
        write_markdown(stored, machine, name, md_path)
    if not tasks:
        write_markdown(stored, machine, name, md_path)
    print(md_path.read_text())


SHARED_SETTINGS = ("overrides", "num_train_episodes", "action_noise", "episodes", "train", "model", "windows", "norm")


def merge_methods(previous: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """Keep what the previous run of a task measured and this invocation did not, when every shared
    setting is equal: the rows of methods it did not run, and the seeds it did not run of methods
    whose objective settings are unchanged.

    So ``--methods shortcut`` refreshes one row without retraining the others, and ``--seeds 1 2``
    adds seeds to a stored seed 0; each seed keeps the command and time of the run that made it,
    and the wall time becomes the sum over every seed of every row.
    """
    if previous is None or changed_settings(previous, entry):
        return entry
    rows = {}
    for method in METHODS:
        old, new = previous["methods"].get(method), entry["methods"].get(method)
        if old is not None and (new is None or same_objective(old.get("objective", {}), new.get("objective", {}), method)):
            seeds = {**seed_records(old, previous, method), **(seed_records(new, entry, method) if new else {})}
            rows[method] = combine_seeds(seeds, (new or old).get("objective", {}))
        elif new is not None:
            rows[method] = combine_seeds(seed_records(new, entry, method), new.get("objective", {}))
    fresh = sum(r["train_s"] + r["eval_s"] for r in entry["methods"].values())
    merged = {k: v for k, v in entry.items() if k != "kept_rows"}
    merged["methods"] = rows
    merged["wall_s"] = entry["wall_s"] - fresh + sum(r["train_s"] + r["eval_s"] for r in rows.values())
    return merged


def changed_settings(previous: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """The shared settings in which a new run of a task differs from the stored one (then it replaces it)."""
    return [k for k in SHARED_SETTINGS if previous.get(k) != entry.get(k)]


def same_objective(stored: dict[str, Any], current: dict[str, Any], method: str) -> bool:
    """Whether a stored row was trained with the current objective settings (``same_settings``)."""
    return same_settings(stored, current, as_dict(compose_config([f"objective={method}"]).objective))


def seed_records(row: dict[str, Any], entry: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    """A stored row's per-seed numbers, each with its origin; a row stored before seeds were
    recorded is seed 0 of the run that made it (the entry's, or the one its ``kept_rows`` name).
    An origin stored before origins named their machine gets the entry's, so that merging in a
    seed run on another machine does not relabel it."""
    if "per_seed" in row:
        machine = {"machine": entry["machine"]} if "machine" in entry else {}
        return {seed: {**record, "origin": {**machine, **record.get("origin", {})}} for seed, record in row["per_seed"].items()}
    made_by = next((g for g in entry.get("kept_rows", []) if method in g["methods"]), entry)
    numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"0": {**numbers, "origin": {"command": made_by["command"], "finished": made_by["finished"]}}}


def earlier_seeds(entry: dict[str, Any]) -> str:
    """The sentences naming the rows and seeds of a task that earlier runs measured, by run (rows
    stored before seeds were recorded name theirs through ``kept_rows``)."""
    own = (entry.get("command"), entry.get("finished"))
    groups: dict[tuple[str, str], list[str]] = {}
    for method, row in entry["methods"].items():
        records = seed_records(row, entry, method)
        by_origin: dict[tuple[str, str], list[str]] = {}
        for seed, record in records.items():
            origin = record.get("origin", {})
            by_origin.setdefault((origin.get("command"), origin.get("finished")), []).append(seed)
        for origin, seeds in by_origin.items():
            if origin != own and origin != (None, None):
                whole = len(seeds) == len(records)
                groups.setdefault(origin, []).append(LABELS[method] + ("" if whole else f" seed {', '.join(seeds)}"))
    return "".join(
        f" Rows {', '.join(items)} from an earlier run with the same settings: `python benchmarks/robot_policies.py {command}` ({finished})."
        for (command, finished), items in groups.items()
    )


def write_markdown(stored: dict[str, Any], machine: str, name: str, path: Path) -> None:
    family = OGBENCH_TASKS if any(task_of(key) in OGBENCH_TASKS for key in stored["results"]) else TASKS
    not_run = {t: stored.get("not_run", {}).get(t, "not run yet") for t in family if t not in stored["results"]}
    path.write_text(render(stored["results"], machine, name, not_run, stored.get("notes", [])))


if __name__ == "__main__":
    main()
