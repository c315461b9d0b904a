"""Convert pytorch-fid's Inception weights (.pth, needs torch) to a torch-free .npz:

    python -m shortcutlib.cli.convert_inception --pth pt_inception-2015-12-05-6726825d.pth --out fid_inception.npz
"""

from __future__ import annotations

import argparse

from shortcutlib.metrics.inception_weights import WEIGHTS_FILENAME, convert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shortcutlib.cli.convert_inception", description=__doc__.split("\n")[0])
    parser.add_argument("--pth", required=True, help=f"path to {WEIGHTS_FILENAME}")
    parser.add_argument("--out", required=True, help="output .npz path")
    args = parser.parse_args(argv)
    print(f"wrote {convert(args.pth, args.out)}")


if __name__ == "__main__":
    main()
