"""``domain=digits``: 1797 8x8 grey digits in pixel space, class-conditional, a small DiT."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from flax import nnx

from domains.digits.features import DigitFeatures
from domains.vector_eval import metric_vs_steps_plot, save_samples
from shortcutlib.config import require
from shortcutlib.domain import Batch, DomainConfig, IdentityCodec, SampleFn, infinite_batches
from shortcutlib.nn.factory import build_backbone


def load_digits_split(val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images in [-1, 1], shape (N, 8, 8, 1), and int32 labels; a fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    images = (raw.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = raw.target.astype(np.int32)
    return tuple(train_test_split(images, labels, test_size=val_fraction, random_state=seed, stratify=labels))  # type: ignore[return-value]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8 [0, 255] (clipped)."""
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def image_grid(images: np.ndarray, nrow: int, pad: int = 1) -> np.ndarray:
    """Tile (N, H, W, C) images in [-1, 1] into one uint8 picture."""
    n, h, w, c = images.shape
    ncol = int(np.ceil(n / nrow))
    grid = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i, img in enumerate(np.clip((images + 1) / 2, 0, 1)):
        r, col = divmod(i, ncol)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img
    out = (grid * 255).round().astype(np.uint8)
    return out[..., 0] if c == 1 else out


@dataclass
class DigitsConfig(DomainConfig):
    name: str = "digits"
    conditional: bool = True  # class-conditional (labels 0..9, 10 the null token)
    val_fraction: float = 0.2  # held-out digits, a fixed stratified split
    eval_draws: int = 3  # sets of samples per budget, each as large as the held-out split (the floor's size)
    cache_dir: Optional[str] = "~/.cache/shortcutlib"  # the digit classifier is cached here

    def __post_init__(self) -> None:
        require(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "must be in (0, 1).")
        require(self.eval_draws >= 1, "eval_draws", self.eval_draws, "must be at least 1.")


class DigitsDomain:
    Config = DigitsConfig

    def __init__(self, config: DigitsConfig | None = None):
        config = config or DigitsConfig()
        self.name = config.name
        self.conditional = config.conditional
        self.num_classes = 10 if self.conditional else 0
        self.x_train, self.x_val, self.y_train, self.y_val = load_digits_split(config.val_fraction)
        self.sample_shape = (8, 8, 1)
        self.codec = IdentityCodec()
        self.eval_draws = config.eval_draws
        self.cache_dir = config.cache_dir
        self._features: DigitFeatures | None = None

    @property
    def features(self) -> DigitFeatures:
        if self._features is None:
            self._features = DigitFeatures(self.x_train, self.y_train, self.cache_dir)
        return self._features

    def _cond(self, labels: np.ndarray) -> np.ndarray | None:
        return labels if self.conditional else None

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        return infinite_batches({"x": self.x_train, "cond": self._cond(self.y_train)}, batch_size, seed, start_batch)

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]:
        return infinite_batches({"x": self.x_val, "cond": self._cond(self.y_val)}, batch_size, seed)

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module:
        return build_backbone(model_config, data_shape=self.sample_shape, num_classes=self.num_classes, rngs=rngs)

    def sample_cond(self, num_samples: int, seed: int) -> np.ndarray | None:
        """Labels in equal proportions (0, 1, ..., 9, 0, 1, ...)."""
        return self._cond(np.arange(num_samples, dtype=np.int32) % 10)

    def output(self, z: np.ndarray) -> np.ndarray:
        """uint8 images (N, 8, 8, 1), 0 = background."""
        return to_uint8(np.asarray(z))

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def draw(self, sample_fn: SampleFn, n_steps: int, num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``num`` samples (labels 0, 1, ..., 9 in turn) from the key of ``seed``, clipped to [-1, 1]."""
        labels = np.arange(num, dtype=np.int32) % 10
        x = sample_fn(jax.random.PRNGKey(seed), n_steps, num, self._cond(labels))
        return np.clip(np.asarray(x), -1.0, 1.0), labels

    @property
    def eval_samples(self) -> int:
        return self.eval_draws * len(self.x_val)

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        """Fréchet distance in the classifier's feature space to the training digits, with the floor
        at the same sample size: ``fd_floor`` is the held-out digits' distance, and ``fd@n`` the mean
        distance of ``eval_draws`` disjoint sets of as many samples. For conditional models also the
        classifier's accuracy on the samples against the labels they were drawn for. The samples
        are saved (``samples_<n>steps.npy``, as ``output`` gives them)."""
        reference, size = self.x_train, len(self.x_val)
        metrics = {"fd_floor": self.features.frechet(self.x_val, reference)}
        out_dir.mkdir(parents=True, exist_ok=True)
        for n in steps:
            x, labels = self.draw(sample_fn, n, self.eval_samples)
            metrics[f"fd@{n}"] = float(np.mean([self.features.frechet(x[i : i + size], reference) for i in range(0, len(x), size)]))
            if self.conditional:
                metrics[f"class_acc@{n}"] = float(np.mean(self.features.predict(x) == labels))
            save_samples(out_dir, {n: self.output(x)})
        metric_vs_steps_plot(metrics, ["fd"], out_dir / "fd_vs_steps.png", "Fréchet distance (digit features)")
        return metrics

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]:
        """A 10x10 grid per budget: column i holds digit i when class-conditional."""
        import imageio.v3 as iio

        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for n in steps:
            x, _ = self.draw(sample_fn, n, 100, seed=1)
            grid = image_grid(x, nrow=10)
            grid = np.kron(grid, np.ones((4, 4), np.uint8))  # upscale for viewing
            path = out_dir / f"grid_{n}steps.png"
            iio.imwrite(path, grid)
            paths.append(path)
        return paths
