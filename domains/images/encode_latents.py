"""Pre-encode an image dataset once with the VAE (resumable):

    python -m domains.images.encode_latents --source imagenet --data-dir ~/tensorflow_datasets \\
        --vae ~/weights/sd-vae-ft-mse --out ~/latents/imagenet256 [--batch-size 64] [--flip]

See ``domains.images.latents`` for the layout written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from domains.images.latents import encode_dataset
from domains.images.sources import DataMissingError, open_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m domains.images.encode_latents", description="Pre-encode an image dataset with the VAE (resumable)."
    )
    parser.add_argument("--source", required=True, choices=["imagenet", "celebahq", "image_folder"])
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir, or the image folder")
    parser.add_argument("--manual-dir", default=None, help="where the raw archives are (named in the preparation hint)")
    parser.add_argument("--vae", required=True, help="folder with the diffusers config.json and safetensors weights")
    parser.add_argument("--out", required=True, help="output directory for meta.json and shards")
    parser.add_argument("--split", default="train", choices=["train", "eval"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8192, help="examples per shard (a multiple of --batch-size)")
    parser.add_argument("--flip", action="store_true", help="also store the latents of the mirrored images")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--num-workers", type=int, default=8, help="decoding threads")
    parser.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        source = open_source(args.source, args.split, args.data_dir, manual_dir=args.manual_dir)
    except DataMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from domains.images.vae import VAECodec, load_vae

    codec = VAECodec(load_vae(args.vae), chunk_size=args.batch_size)
    out = encode_dataset(
        source,
        codec,
        args.out,
        source_name=args.source,
        split=args.split,
        image_size=args.image_size,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        flip=args.flip,
        dtype=args.dtype,
        num_workers=args.num_workers,
        max_shards=args.max_shards,
        extra_meta={"vae": str(Path(args.vae).expanduser().resolve()), "classes": getattr(source, "classes", None)},
    )
    print(f"latents in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
