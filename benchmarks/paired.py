"""Two rows of a results file compared seed by seed (same data order and evaluation noise).

    python -m benchmarks.paired benchmarks/results/fmnist_pseudo_huber.json shortcut_pseudo_huber shortcut [--metric fd_fmnist]
    python -m benchmarks.paired benchmarks/results/ogbench.json "ogbench_cube_single [adaptive p = 1/2]/shortcut" ogbench_cube_single/shortcut --suffix '|noise=0'

Prints, per budget, the mean and sample std over seeds of (first row minus second row) and each
seed's difference; the readings' "paired by seed" numbers come from it. A paper-table file's rows
are its methods and its metric defaults to the file's first; a robot-policy file's rows are
``task/method`` and its metric is the success rate (a fraction), ``--suffix '|noise=0'`` for the
deterministic evaluations. Seeds present in only one row are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def rows_and_runs(data: dict) -> tuple[list[str], list[dict], str]:
    """A results file's row names, its runs (``method``, ``seed``, ``metrics``) and default metric:
    a paper table's as stored; a robot-policy file's (``results``) one run per task, method and seed."""
    if "results" not in data:
        return list(data["methods"]), data["runs"], data["metrics"][0]
    runs = [
        {"method": f"{task}/{method}", "seed": int(seed), "metrics": record}
        for task, entry in data["results"].items()
        for method, row in entry["methods"].items()
        for seed, record in row.get("per_seed", {}).items()
    ]
    return sorted({r["method"] for r in runs}), runs, "success"


def paired_differences(runs: list[dict], metric: str, first: str, second: str, suffix: str = "") -> dict[int, list[float]]:
    """Per budget, the seed-wise differences first − second of ``metric@budget`` (followed by
    ``suffix``), in seed order."""
    by_seed = {m: {r["seed"]: r["metrics"] for r in runs if r["method"] == m} for m in (first, second)}
    seeds = sorted(set(by_seed[first]) & set(by_seed[second]))
    if not seeds:
        raise SystemExit(f"rows {first!r} and {second!r} share no seed; pick two rows of the file (its 'methods').")
    prefix = f"{metric}@"
    middles = (k[len(prefix):len(k) - len(suffix)] for k in by_seed[first][seeds[0]] if k.startswith(prefix) and k.endswith(suffix))
    budgets = sorted(int(m) for m in middles if m.isdigit())
    keys = {n: f"{prefix}{n}{suffix}" for n in budgets}
    return {n: [by_seed[first][s][keys[n]] - by_seed[second][s][keys[n]] for s in seeds] for n in budgets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a paper-table or robot-policy results .json")
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--metric", default=None)
    parser.add_argument("--suffix", default="", help="what follows the budget in the metric's keys, e.g. '|noise=0'")
    args = parser.parse_args(argv)
    rows, runs, default_metric = rows_and_runs(json.loads(args.results.read_text()))
    for row in (args.first, args.second):
        if row not in rows:
            raise SystemExit(f"{args.results} has no row {row!r}; its rows: {', '.join(rows)}.")
    metric = args.metric or default_metric
    for n, diffs in paired_differences(runs, metric, args.first, args.second, args.suffix).items():
        std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f"{n:4d} steps: {statistics.mean(diffs):+.3f} ± {std:.3f}   per seed " + " ".join(f"{d:+.3f}" for d in diffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
