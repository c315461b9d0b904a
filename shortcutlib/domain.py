"""The Domain contract: everything the core needs to know about a kind of data.

A domain yields host-local numpy batches ``{"x": array, "cond": pytree or None}`` in
*data space*; its ``codec`` maps data space to the model space the objective and the
sampler work in (identity, normalised actions, VAE latents) and back.

A domain is a class with a nested ``Config`` dataclass (its typed options and their
defaults) and a constructor ``Domain(config)``; a config file names it with
``_target_: package.module.ClassName`` (see ``shortcutlib.config``). Nothing in the core
names a domain: adding one is one package plus one config file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from flax import nnx

from shortcutlib.config import ComponentConfig

Batch = dict[str, Any]


@dataclass
class DomainConfig(ComponentConfig):
    """Options every domain has; a domain's ``Config`` extends it."""

    name: str = ""  # names the run folder, runs/<name>/<date>


class SampleFn(Protocol):
    """Draws samples in model space with an Euler sampler of ``num_steps`` steps.

    ``cond`` is a pytree whose leaves have a leading batch axis, or None for
    unconditional domains (then ``num_samples`` gives the batch size). ``noise``, if given,
    is the initial state (num_samples, *sample_shape), e.g. for interpolation strips.
    ``noise_scale`` multiplies the drawn initial noise (a temperature; 0 gives its mean).
    """

    def __call__(
        self,
        key: jax.Array,
        num_steps: int,
        num_samples: int,
        cond: Any = None,
        noise: Any = None,
        noise_scale: float = 1.0,
    ) -> jax.Array: ...


@runtime_checkable
class Codec(Protocol):
    def encode(self, x: Any) -> Any: ...

    def decode(self, z: Any) -> Any: ...


class IdentityCodec:
    """Model space is data space."""

    def encode(self, x: Any) -> Any:
        return x

    def decode(self, z: Any) -> Any:
        return z


@runtime_checkable
class Domain(Protocol):
    name: str
    codec: Codec
    sample_shape: tuple[int, ...]  # model-space shape of one example
    num_classes: int  # > 0 for class-conditional data (label num_classes is the null token)

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        """Endless batches; ``start_batch`` skips that many so a resumed run sees the same data."""
        ...

    def eval_data(self, batch_size: int, seed: int) -> Iterator[Batch]: ...

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module: ...

    def sample_cond(self, num_samples: int, seed: int) -> Any:
        """Conditioning for ``num_samples`` samples (labels, observations), or None."""
        ...

    def evaluate(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> dict[str, float]: ...

    def visualize(self, sample_fn: SampleFn, steps: Sequence[int], out_dir: Path) -> list[Path]: ...

    def output(self, z: np.ndarray) -> np.ndarray:
        """Model-space samples as a user receives them: uint8 images, raw vectors or actions."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state saved with every checkpoint (e.g. normalisers); {} if none."""
        ...

    def load_state(self, state: dict[str, Any]) -> None: ...


def infinite_batches(arrays: Batch, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
    """Reshuffled epochs over in-memory arrays; every batch is full.

    ``arrays`` maps names to arrays (or None) sharing their leading axis. ``start_batch``
    skips batches without materialising them, so resuming at step k costs nothing.
    """
    n = len(jax.tree.leaves(next(v for v in arrays.values() if v is not None))[0])
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the dataset size {n}; lower batch_size.")
    per_epoch = n // batch_size
    rng = np.random.default_rng(seed)
    epoch, skip = divmod(start_batch, per_epoch)
    for _ in range(epoch):
        rng.permutation(n)
    while True:
        order = rng.permutation(n)
        for start in range(skip * batch_size, per_epoch * batch_size, batch_size):
            idx = order[start : start + batch_size]
            yield {k: (None if v is None else jax.tree.map(lambda a: a[idx], v)) for k, v in arrays.items()}
        skip = 0
