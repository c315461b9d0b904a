"""Batches of images for FID statistics: the image files of a folder (the extensions pytorch-fid
reads, in sorted order, converted to RGB) or one (N, H, W, C) ``.npy`` array (uint8 or float in
[0, 1], C in {1, 3})."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


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
