"""Variants of one setting over seeds, each evaluated with its own sampling plan and with plain Euler
on its instantaneous velocity (d = 0), at every budget: how defaults are chosen.

    python -m benchmarks.sweep --domain toy2d --name shortcut_defaults --seeds 0 1 2 \\
        --variant "default: objective=shortcut" --variant "quarter: objective=shortcut objective.bootstrap_fraction=0.25"

Each ``--variant "label: key=value ..."`` adds its overrides to the domain's paper-table setting
(``benchmarks.paper_table.SETTINGS``). Writes ``benchmarks/results/<name>.{md,json}``: means over
seeds at 1, 2, 4, ..., 128 steps (and the seed std at 1 and 128), the final training loss (a
diverging run shows there), and for the toy mixtures the RMS distance to the exact flow map.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import compose_config, fmt, machine_description, markdown_table
from benchmarks.paper_table import COMMON, METRICS, RESULTS, SETTINGS, STEPS
from shortcutlib.inference import make_sample_fn
from shortcutlib.run import build_domain
from shortcutlib.train.logging import read_metrics
from shortcutlib.train.phases import run_phases


def run_variant(overrides: list[str], seed: int, run_dir: Path) -> dict[str, dict[str, float]]:
    cfg = compose_config([*overrides, f"seed={seed}", f"out_dir={run_dir}"])
    shutil.rmtree(run_dir, ignore_errors=True)
    domain = build_domain(cfg)
    result = run_phases(cfg, domain, run_dir).result
    objective = result.run.objective
    out = {}
    for plan in ("own", "d=0"):
        if plan == "d=0":
            objective.query_sizes = lambda n: np.zeros(n)  # this instance only: plain Euler on the d = 0 velocity
        sample_fn = make_sample_fn(result.run.graphdef, result.state.ema_params, objective, tuple(domain.sample_shape),
                                   cfg_scale=cfg.sample.cfg_scale, num_classes=domain.num_classes)
        out[plan] = domain.evaluate(sample_fn, STEPS, run_dir / f"eval_{plan}")
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train") if "loss" in r]
    out["own"]["final_loss"] = losses[-1] if losses else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", action="append", required=True, metavar="'LABEL: KEY=VALUE ...'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work-dir", default="runs/sweep")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    base = [*SETTINGS[args.domain]["full"], *COMMON]
    variants = {}
    for text in args.variant:
        label, _, rest = text.partition(":")
        variants[label.strip()] = rest.split()
    metric = METRICS[args.domain][0]
    runs = {label: [run_variant([*base, *extra], seed, Path(args.work_dir) / args.name / re.sub(r"[^A-Za-z0-9_.-]+", "_", label) / f"seed{seed}")
                    for seed in args.seeds]
            for label, extra in variants.items()}
    lines = [f"# Sweep `{args.name}` on {args.domain}", "", f"Machine: {machine_description()}.", "", "Command:", "", "```",
             "python -m benchmarks.sweep " + " ".join(f"'{a}'" if " " in a else a for a in (argv if argv is not None else sys.argv[1:])),
             "```", "", f"Shared setting: `{' '.join(base)}`; seeds {args.seeds}. Cells: {metric} (mean over seeds) at each budget.", ""]
    for plan, title in (("own", "With the objective's own sampling plan"), ("d=0", "With plain Euler on the d = 0 velocity")):
        header = ["variant", *map(str, STEPS), "std@1", "std@128"]
        rows = []
        for label, results in runs.items():
            values = np.array([[r[plan][f"{metric}@{n}"] for n in STEPS] for r in results])
            rows.append([label, *(fmt(v) for v in values.mean(0)), fmt(values[:, 0].std(ddof=1) if len(results) > 1 else 0.0),
                         fmt(values[:, -1].std(ddof=1) if len(results) > 1 else 0.0)])
        lines += [f"{title}:", "", markdown_table(header, rows), ""]
    extra_rows = []
    for label, results in runs.items():
        loss = float(np.mean([r["own"]["final_loss"] for r in results]))
        rmse = [float(np.mean([r["own"].get(f"flow_rmse@{n}", np.nan) for r in results])) for n in (1, 128)]
        extra_rows.append([label, " ".join(variants[label]), f"{loss:.4g}", fmt(rmse[0]), fmt(rmse[1])])
    lines += ["Variants (final training loss, mean over seeds; RMS distance to the exact flow map at 1 and 128 steps where known):", "",
              markdown_table(["variant", "overrides", "final loss", "rmse@1", "rmse@128"], extra_rows), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{args.name}.md"
    notes = md.read_text()[md.read_text().index("## Reading"):] if md.exists() and "## Reading" in md.read_text() else ""
    md.write_text("\n".join(lines + ([notes.rstrip(), ""] if notes else [])))
    (out / f"{args.name}.json").write_text(json.dumps({"variants": variants, "seeds": args.seeds, "runs": runs}, indent=1, default=float))
    print(f"Wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
