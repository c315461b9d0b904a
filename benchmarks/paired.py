"""Two rows of a paper-table results file compared seed by seed (same data order and evaluation noise).

    python -m benchmarks.paired benchmarks/results/fmnist_pseudo_huber.json shortcut_pseudo_huber shortcut [--metric fd_fmnist]

Prints, per budget, the mean and sample std over seeds of (first row minus second row) and each
seed's difference; the readings' "paired by seed" numbers come from it. The metric defaults to the
file's first. Seeds present in only one row are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def paired_differences(runs: list[dict], metric: str, first: str, second: str) -> dict[int, list[float]]:
    """Per budget, the seed-wise differences first − second of ``metric@budget``, in seed order."""
    by_seed = {m: {r["seed"]: r["metrics"] for r in runs if r["method"] == m} for m in (first, second)}
    seeds = sorted(set(by_seed[first]) & set(by_seed[second]))
    if not seeds:
        raise SystemExit(f"rows {first!r} and {second!r} share no seed; pick two rows of the file (its 'methods').")
    prefix = f"{metric}@"
    budgets = sorted(int(k[len(prefix):]) for k in by_seed[first][seeds[0]] if k.startswith(prefix))
    return {n: [by_seed[first][s][f"{prefix}{n}"] - by_seed[second][s][f"{prefix}{n}"] for s in seeds] for n in budgets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a paper-table results .json")
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--metric", default=None)
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    for row in (args.first, args.second):
        if row not in data["methods"]:
            raise SystemExit(f"{args.results} has no row {row!r}; its rows: {', '.join(data['methods'])}.")
    metric = args.metric or data["metrics"][0]
    for n, diffs in paired_differences(data["runs"], metric, args.first, args.second).items():
        std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        print(f"{n:4d} steps: {statistics.mean(diffs):+.3f} ± {std:.3f}   per seed " + " ".join(f"{d:+.3f}" for d in diffs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
