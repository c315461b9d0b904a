"""FID reference statistics of a dataset's centre crops (no flips):

    python -m domains.images.ref_stats --source imagenet --data-dir D --weights W --out imagenet_train.npz
"""

from __future__ import annotations

import argparse
import logging
import sys

from domains.images.domain import ImageConfig, ImageDomain
from domains.images.sources import SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domains.images.ref_stats", description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, choices=list(SOURCES))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--manual-dir", default=None)
    parser.add_argument("--weights", required=True, help="pytorch-fid Inception weights (.pth or .npz)")
    parser.add_argument("--out", required=True, help="output .npz with mu and sigma")
    parser.add_argument("--split", default="train", choices=["train", "eval"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=None, help="first N examples (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from shortcutlib.metrics.fid import compute_statistics, save_statistics

    config = ImageConfig(
        name=args.source, source=args.source, data_dir=args.data_dir, manual_dir=args.manual_dir,
        image_size=args.image_size, num_workers=args.num_workers,
    )
    config.fid.weights, config.fid.ref_stats = args.weights, args.out
    try:
        domain = ImageDomain(config)
        images = domain.reference_images(args.split, args.batch_size, args.num_samples)
        mu, sigma = compute_statistics(images, args.weights, batch_size=args.batch_size)
    except FileNotFoundError as e:  # DataMissingError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_statistics(args.out, mu, sigma)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
