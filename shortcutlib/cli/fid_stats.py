"""Write FID reference statistics (``mu``, ``sigma`` in an ``.npz``) for a set of images.

    python -m shortcutlib.cli.fid_stats --images-dir DIR --weights FILE --out stats.npz
    python -m shortcutlib.cli.fid_stats --npy images.npy --weights FILE --out stats.npz

``--weights`` is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or its ``.npz`` conversion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shortcutlib.metrics.fid import compute_statistics, save_statistics
from shortcutlib.metrics.image_files import iter_image_dir, iter_npy


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m shortcutlib.cli.fid_stats", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images-dir", help="directory of image files")
    source.add_argument("--npy", help=".npy file with an (N, H, W, C) uint8 or [0, 1] float array")
    parser.add_argument("--weights", required=True, help="pt_inception-2015-12-05-6726825d.pth or its .npz")
    parser.add_argument("--out", required=True, help="output statistics .npz (keys mu, sigma)")
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args(argv)

    if args.images_dir is not None:
        batches = iter_image_dir(args.images_dir, args.batch_size)
    else:
        batches = iter_npy(args.npy, args.batch_size)
    mu, sigma = compute_statistics(batches, args.weights, batch_size=args.batch_size)
    out = save_statistics(args.out, mu, sigma)
    print(f"wrote {out} (features of dimension {mu.shape[0]})")
    return out


if __name__ == "__main__":
    main()
