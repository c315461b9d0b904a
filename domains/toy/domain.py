"""``domain=toy2d``: 2-D distributions, an MLP backbone, distances with exact answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from domains.toy.datasets import NAMES, make_sampler
from domains.vector_eval import metric_vs_steps_plot, save_samples, scatter_grid
from shortcutlib.config import require, require_choice
from shortcutlib.domain import Batch, DomainConfig, IdentityCodec, SampleFn
from shortcutlib.metrics.distances import sliced_wasserstein
from shortcutlib.nn.factory import build_backbone


@dataclass
class Toy2DConfig(DomainConfig):
    name: str = "toy2d"
    dataset: str = "gmm_ring"  # gmm_ring | gmm_grid | checkerboard | moons
    eval_samples: int = 4096  # samples per budget (and per fresh data draw) for the distances
    flow_steps: int = 500  # steps of the exact flow map's ODE solve (mixtures)

    def __post_init__(self) -> None:
        require_choice("dataset", self.dataset, NAMES)
        require(self.eval_samples >= 2, "eval_samples", self.eval_samples, "must be at least 2.")


class Toy2DDomain:
    Config = Toy2DConfig
    num_classes = 0

    def __init__(self, config: Toy2DConfig | None = None):
        config = config or Toy2DConfig()
        self.name = config.name
        self.dataset = config.dataset
        self.sampler, self.mixture = make_sampler(self.dataset)
        self.eval_samples = config.eval_samples
        self.flow_steps = config.flow_steps
        self.codec = IdentityCodec()
        self.sample_shape = (2,)

    def _batches(self, batch_size: int, seed: int, start_batch: int) -> Iterator[Batch]:
        # Fresh samples per batch, seeded by (seed, index): infinite data and exact resume.
        i = start_batch
        while True:
            yield {"x": self.sampler(batch_size, np.random.default_rng([seed, i])), "cond": None}
            i += 1

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        return self._batches(batch_size, seed, start_batch)

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]:
        return self._batches(batch_size, seed + 10_000_019, 0)

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module:
        return build_backbone(model_config, data_shape=self.sample_shape, rngs=rngs)

    def sample_cond(self, num_samples: int, seed: int) -> None:
        return None

    def output(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, np.float32)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def draw(self, sample_fn: SampleFn, steps: Sequence[int], seed: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The same noise pushed through every budget, so budgets differ only by the sampler."""
        noise = jax.random.normal(jax.random.PRNGKey(seed), (self.eval_samples, *self.sample_shape))
        samples = {n: np.asarray(sample_fn(jax.random.PRNGKey(seed), n, self.eval_samples, None, noise)) for n in steps}
        return np.asarray(noise), samples

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]:
        """Sliced W2 to fresh data (and the floor between two fresh draws); for mixtures also
        the RMS distance of each sample to where the exact flow map sends the same noise."""
        noise, samples = self.draw(sample_fn, steps)
        data = self.sampler(self.eval_samples, np.random.default_rng(123))
        other = self.sampler(self.eval_samples, np.random.default_rng(456))
        metrics = {"swd_floor": sliced_wasserstein(data, other)}
        exact = self.mixture.flow(noise, steps=self.flow_steps) if self.mixture is not None else None
        for n, x in samples.items():
            metrics[f"swd@{n}"] = sliced_wasserstein(x, data)
            if exact is not None:
                metrics[f"flow_rmse@{n}"] = float(np.sqrt(np.mean(np.sum((x - exact) ** 2, axis=1))))
        out_dir.mkdir(parents=True, exist_ok=True)
        save_samples(out_dir, samples)
        metric_vs_steps_plot(metrics, ["swd", "flow_rmse"], out_dir / "distance_vs_steps.png", "distance")
        return metrics

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]:
        _, samples = self.draw(sample_fn, steps)
        out_dir.mkdir(parents=True, exist_ok=True)
        data = self.sampler(self.eval_samples, np.random.default_rng(123))
        return [scatter_grid(samples, data, out_dir / "samples.png")]
