"""The README's results section, generated from benchmarks/results/*.json (and checked by a test).

    python -m benchmarks.readme_results          # rewrite the section between the README's markers
    python -m benchmarks.readme_results --check  # exit 1 if the README differs from the results

Every figure the README quotes comes from here; the results files name the machine and command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin (python -m benchmarks.readme_results) -->", "<!-- results:end -->"
BUDGETS = (1, 4, 128)


def _mean(runs: list[dict], method: str, key: str) -> float | None:
    values = [r["metrics"][key] for r in runs if r["method"] == method and key in r["metrics"]]
    return sum(values) / len(values) if values else None


def table_rows(name: str, title: str, unit: str, methods: list[str] | None = None) -> list[str]:
    """One block per paper-table results file: the first metric at 1, 4, 128 steps per method."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    from benchmarks.paper_table import BY_KEY

    metric = data["metrics"][0]
    seeds = sorted({r["seed"] for r in data["runs"]})
    lines = [f"**{title}** ({unit} at 1 / 4 / 128 steps, {f'mean over {len(seeds)} seeds' if len(seeds) > 1 else 'one seed'}; "
             f"[{name}.md](benchmarks/results/{name}.md)):", "",
             "| objective | 1 step | 4 steps | 128 steps | step time / FM |", "|---|---|---|---|---|"]
    for method in methods or data["methods"]:
        if method not in data["methods"]:
            continue
        cells = [_mean(data["runs"], method, f"{metric}@{n}") for n in BUDGETS]
        ratio = data.get("ratios", {}).get(method)
        lines.append(f"| {BY_KEY[method].label} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells)
                     + f" | {'–' if ratio is None else f'{ratio:.2f}x'} |")
    floor = _mean(data["runs"], data["methods"][0], f"{metric}_floor")
    if floor is not None:
        lines += ["", f"Floor (real against real, same sample size): {floor:.3f}."]
    return lines + [""]


def latency_rows() -> list[str]:
    path = RESULTS / "policy_latency.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    lines = ["**Inference latency** (one observation, median / p99 ms; "
             "[policy_latency.md](benchmarks/results/policy_latency.md)):", "",
             "| policy backbone | 1-step action chunk | 1-step `Model.sample(1)` |", "|---|---|---|"]
    for label, row in data["rows"].items():
        lines.append(f"| {label} | {row['plan@1'][0]:.3f} / {row['plan@1'][1]:.3f} | {row['sample@1'][0]:.3f} / {row['sample@1'][1]:.3f} |")
    return lines + [""]


def ogbench_rows() -> list[str]:
    path = RESULTS / "ogbench.json"
    if not path.exists():
        return []
    results = json.loads(path.read_text())["results"]
    lines = ["**OGBench manipulation, goal-conditioned** (success over OGBench's five evaluation tasks, mean over the "
             "training seeds, deterministic / sampled; [ogbench.md](benchmarks/results/ogbench.md), which also gives the "
             "std and the published GCBC):", "",
             "| task | policy | seeds | 1 step | 4 steps | 128 steps |", "|---|---|---|---|---|---|"]
    for task, entry in results.items():
        for method, row in entry["methods"].items():
            budgets = (1,) if method == "bc" else (1, 4, 128)
            cells = [f"{100 * row.get(f'success@{n}|noise=0', row[f'success@{n}']):.0f}% / {100 * row[f'success@{n}']:.0f}%"
                     if method != "bc" else f"{100 * row[f'success@{n}']:.0f}%" for n in budgets]
            seeds = len(row.get("per_seed", {"0": None}))
            lines.append(f"| {task} | {method} | {seeds} | " + " | ".join(cells + ["–"] * (3 - len(cells))) + " |")
    return lines + [""]


def section() -> str:
    blocks = [
        table_rows("paper_table_toy2d", "2-D ring", "sliced W2 to data"),
        table_rows("paper_table_toy2d_defaults", "2-D ring at this version's defaults (the shortcut with a sixteenth of "
                   "the batch for self-consistency, both it and flow matching with the plug-in velocity)", "sliced W2 to data"),
        table_rows("paper_table_digits", "8x8 digits", "Fréchet distance, digit classifier"),
        table_rows("paper_table_digits_defaults", "8x8 digits at this version's defaults (the shortcut and flow matching with "
                   "the pseudo-Huber loss)", "Fréchet distance, digit classifier"),
        table_rows("paper_table_digits_older", "8x8 digits, older comparison methods", "Fréchet distance, digit classifier",
                   ["consistency", "consistency_distillation", "progressive", "reflow", "reflow_two_stage"]),
        table_rows("fmnist", "Fashion-MNIST", "Fréchet distance, Fashion-MNIST classifier"),
        table_rows("fmnist_shipped_judge_three_seeds", "Fashion-MNIST, scored by the shipped judge",
                   "Fréchet distance, Fashion-MNIST classifier"),
        table_rows("fmnist_three_seeds", "Fashion-MNIST, shortcut against flow matching", "Fréchet distance, Fashion-MNIST classifier"),
        table_rows("fmnist_adaptive_three_seeds", "Fashion-MNIST, MeanFlow's adaptive loss weight", "Fréchet distance, Fashion-MNIST classifier",
                   ["shortcut_adaptive", "flow_matching_adaptive"]),
        table_rows("fmnist_defaults", "Fashion-MNIST at this version's defaults (the shortcut and flow matching with the "
                   "pseudo-Huber loss, the shortcut's self-consistency rows weighted 4), shipped judge", "Fréchet distance, Fashion-MNIST classifier",
                   ["shortcut", "shortcut_paper", "flow_matching", "meanflow", "improved_meanflow", "explicit_shortcut"]),
        ogbench_rows(),
        latency_rows(),
    ]
    body = [line for block in blocks for line in block]
    return "\n".join([BEGIN, "", *body, END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md has no results section between {BEGIN!r} and {END!r}.", file=sys.stderr)
        return 1
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + section() + text[stop:]
    if args.check:
        if updated != text:
            print("README.md's results section differs from benchmarks/results: run python -m benchmarks.readme_results", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
