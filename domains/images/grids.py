"""Pictures of image samples: grids per step budget, class grids, interpolation strips, FID plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from domains.vector_eval import metric_vs_steps_plot

LABEL_WIDTH = 64


def as_rgb(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 1) greyscale -> (..., H, W, 3) grey RGB; RGB unchanged."""
    images = np.asarray(images)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def zoom(images: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (N, H, W, C) images by an integer ``factor``, so small images stay sharp."""
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def tile(rows: Sequence[np.ndarray], pad: int = 2, background: int = 255) -> np.ndarray:
    """Tile rows of uint8 images, each (C, H, W, 3) or greyscale (C, H, W, 1), into one
    (R(H+pad)+pad, C(W+pad)+pad, 3) picture."""
    rows = [as_rgb(r) for r in rows]
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), background, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            out[top : top + h, left : left + w] = image
    return out


def with_row_labels(picture: np.ndarray, labels: Sequence[str], row_height: int, pad: int = 2) -> np.ndarray:
    """Prepend a white margin naming each row (e.g. the step budget)."""
    margin = Image.new("RGB", (LABEL_WIDTH, picture.shape[0]), "white")
    draw = ImageDraw.Draw(margin)
    for i, text in enumerate(labels):
        draw.text((4, pad + i * (row_height + pad) + row_height // 2 - 6), text, fill="black")
    return np.concatenate([np.asarray(margin), picture], axis=1)


def save_png(picture: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def budget_grid(samples: Mapping[int, np.ndarray], path: Path) -> Path:
    """One row per step budget (same noise in every row), as in the paper's Figure 1."""
    budgets = sorted(samples)
    rows = [samples[n] for n in budgets]
    picture = tile(rows)
    labels = [f"{n} step{'s' if n > 1 else ''}" for n in budgets]
    return save_png(with_row_labels(picture, labels, rows[0].shape[1]), path)


def sample_grid(images: np.ndarray, path: Path, ncols: int = 8) -> Path:
    """A plain grid of (N, H, W, 3) or (N, H, W, 1) uint8 samples, ``ncols`` per row."""
    rows = [images[i : i + ncols] for i in range(0, len(images), ncols)]
    return save_png(tile(rows), path)


def class_grid(images_per_class: Mapping[int, np.ndarray], path: Path, names: Mapping[int, str] | None = None) -> Path:
    """One row per class label."""
    labels = sorted(images_per_class)
    rows = [images_per_class[c] for c in labels]
    texts = [(names or {}).get(c, f"class {c}")[:10] for c in labels]
    return save_png(with_row_labels(tile(rows), texts, rows[0].shape[1]), path)


def fid_vs_steps_plot(metrics: Mapping[str, float], path: Path) -> Path:
    """``fid@n`` against the step budget n (log2 axis)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return metric_vs_steps_plot(dict(metrics), ["fid"], path, "FID")
