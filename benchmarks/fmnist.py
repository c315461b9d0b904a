"""Fashion-MNIST: every objective at every budget, pixel-space DiT (benchmarks/results/fmnist.md).

    apt-get install -y dataset-fashion-mnist       # the data, once (Debian's package)
    python -m benchmarks.fmnist [--seeds 0] [--methods ...]   # experiment=fmnist_dit, sized for a 2-core CPU
    python -m benchmarks.fmnist --gpu                          # experiment=fmnist_dit_gpu, for one GPU

The table, plot and json come from ``benchmarks.paper_table`` (domain fmnist); this adds the
sample grids (rows: 1, 4, 128 steps, the same noise) of each objective's first seed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from benchmarks import paper_table

METHODS = "shortcut,shortcut_paper,flow_matching,meanflow,improved_meanflow,explicit_shortcut"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--gpu", action="store_true", help="the GPU-sized experiment (fmnist_dit_gpu)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work-dir", default="runs/paper_table")
    parser.add_argument("--out", default=str(paper_table.RESULTS))
    args, rest = parser.parse_known_args(argv)
    name = "fmnist_gpu" if args.gpu else "fmnist"
    if args.gpu:
        paper_table.SETTINGS["fmnist"]["full"] = ["experiment=fmnist_dit_gpu"]
    forwarded = ["--domain", "fmnist", "--name", name, "--methods", args.methods, "--seeds", *map(str, args.seeds),
                 "--work-dir", args.work_dir, "--out", args.out, *(["--quick"] if args.quick else []), *rest]
    code = paper_table.main(forwarded)
    work = Path(args.work_dir) / f"fmnist_{'quick' if args.quick else 'full'}"
    for method in args.methods.split(","):
        for grid in sorted((work / method).glob(f"seed{args.seeds[0]}_*/eval/grid_budgets.png"), key=lambda p: p.stat().st_mtime)[-1:]:
            shutil.copyfile(grid, Path(args.out) / f"{name}_grid_{method}.png")
    return code


if __name__ == "__main__":
    sys.exit(main())
