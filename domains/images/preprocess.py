"""Pixel preprocessing: ADM-style centre crop and resize (or padding), random flips, value ranges.

Images travel as uint8 NHWC until the last moment (cheap to batch and to cache) and are
converted to float32 in [-1, 1], the range the VAE expects, by :func:`to_model_range`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes (JPEG, PNG, ...) to an RGB PIL image.

    Converting to RGB handles the greyscale and CMYK files ImageNet contains.
    """
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def center_crop_resize(image: Image.Image | np.ndarray, size: int = 256, mode: str = "RGB") -> np.ndarray:
    """Resize the short side to ``size`` and take the central ``size x size`` square (uint8 HWC,
    or HW for ``mode="L"``).

    The ADM recipe (Dhariwal & Nichol, 2021), also used by DiT: halve with a box filter
    while the short side is at least twice the target (cheap anti-aliasing), then one
    bicubic resize so the short side is exactly ``size``, then crop the centre.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if image.mode != mode:
        image = image.convert(mode)
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - size) // 2
    left = (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top : top + size, left : left + size])


def pad_to_square(image: np.ndarray, size: int, value: int = 0) -> np.ndarray:
    """Centre an (H, W, C) image on a ``size x size`` canvas filled with ``value``, never resizing.

    Padding keeps every pixel as it is (28x28 digits and clothes become 32x32, which patch sizes
    2, 4 and 8 divide); ``value`` 0 is their black background, -1 in model range.
    """
    h, w = image.shape[:2]
    if h > size or w > size:
        raise ValueError(f"an image of {h}x{w} does not fit in {size}x{size} without resizing; raise image_size or use fit=crop.")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.full((size, size, *image.shape[2:]), value, image.dtype)
    out[top : top + h, left : left + w] = image
    return out


FITS = ("crop", "pad")


def prepare_image(image: Image.Image, size: int, channels: int = 3, fit: str = "crop") -> np.ndarray:
    """A decoded image as uint8 (size, size, channels): greyscale for 1 channel, RGB for 3;
    ``fit="crop"`` is :func:`center_crop_resize`, ``fit="pad"`` is :func:`pad_to_square` with black."""
    mode = {1: "L", 3: "RGB"}[channels]
    if fit == "crop":
        array = center_crop_resize(image, size, mode)
    elif fit == "pad":
        array = np.asarray(image if image.mode == mode else image.convert(mode))
    else:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if array.ndim == 2:
        array = array[..., None]
    return pad_to_square(array, size) if fit == "pad" else array


def flip_mask(rng: np.random.Generator, n: int, prob: float = 0.5) -> np.ndarray:
    """Which of ``n`` examples to mirror. Pixel batches and pre-encoded latents draw it alike,
    so both streams see the same flips for the same seed."""
    return rng.random(n) < prob


def random_flip(images: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> np.ndarray:
    """Flip each image of an NHWC batch left-right with probability ``prob``."""
    flip = flip_mask(rng, images.shape[0], prob)
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> uint8 [0, 255], clipping what falls outside (decoded samples do)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
