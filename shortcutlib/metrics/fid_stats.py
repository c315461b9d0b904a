"""Write FID reference statistics (``mu``, ``sigma`` in an ``.npz``) for a set of images.

    python -m shortcutlib.metrics.fid_stats --images-dir DIR --weights FILE --out stats.npz
    python -m shortcutlib.metrics.fid_stats --npy images.npy --weights FILE --out stats.npz

``--images-dir`` reads the image files directly in DIR (the extensions pytorch-fid
reads, in sorted order), converted to RGB. ``--npy`` reads one (N, H, W, C) array,
uint8 or float in [0, 1], C in {1, 3}. ``--weights`` is pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` or its ``.npz`` conversion.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from shortcutlib.metrics.fid import compute_statistics, save_statistics

IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}


def image_files(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image directory '{directory}' does not exist")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in '{directory}'")
    return files


def iter_image_dir(directory: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 RGB batches of up to ``batch_size`` consecutive files of one size."""
    from PIL import Image

    batch: list[np.ndarray] = []
    for path in image_files(directory):
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        if batch and (len(batch) == batch_size or batch[0].shape != array.shape):
            yield np.stack(batch)
            batch = []
        batch.append(array)
    if batch:
        yield np.stack(batch)


def iter_npy(path: str | os.PathLike, batch_size: int) -> Iterator[np.ndarray]:
    images = np.load(path, mmap_mode="r")
    if images.ndim != 4:
        raise ValueError(f"'{path}' must hold an (N, H, W, C) array, got shape {images.shape}")
    for start in range(0, len(images), batch_size):
        yield np.asarray(images[start : start + batch_size])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m shortcutlib.metrics.fid_stats", description=__doc__.split("\n")[0])
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
