"""Build a backbone from its config: the ``model`` group names a backbone class with ``_target_``.

Every backbone class has a nested ``Config`` (a ``BackboneConfig``) and a classmethod
``from_config(config, spec, rngs)``; ``spec`` holds what the domain knows about its data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from flax import nnx

from shortcutlib.config import (
    ComponentConfig,
    ConfigError,
    locate,
    require,
    require_choice,
)
from shortcutlib.nn.prediction import PREDICTIONS, with_prediction

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclass
class BackboneConfig(ComponentConfig):
    """Options every backbone has."""

    prediction: str = "velocity"  # velocity | data: the output is the velocity, or the clean sample x1 (see nn/prediction.py)
    min_remaining: float = 0.05  # prediction=data: 1 - t is clipped below at this
    dtype: str = "float32"  # compute dtype; parameters, optimizer state and the loss stay float32
    time_scale: float = 1000.0  # t enters its sinusoidal embedding as t * time_scale
    step_scale: float = 1000.0  # d enters its sinusoidal embedding as d * step_scale

    def __post_init__(self) -> None:
        require_choice("prediction", self.prediction, PREDICTIONS)
        require_choice("dtype", self.dtype, tuple(DTYPES))
        require(0.0 < self.min_remaining <= 1.0, "min_remaining", self.min_remaining, "must be in (0, 1].")

    @property
    def compute_dtype(self) -> Any:
        return DTYPES[self.dtype]

    def common_kwargs(self) -> dict[str, Any]:
        """The constructor arguments every backbone takes from these options (float32 parameters)."""
        return {"time_scale": self.time_scale, "step_scale": self.step_scale, "dtype": self.compute_dtype, "param_dtype": jnp.float32}


@dataclass(frozen=True)
class DataSpec:
    """What a backbone needs to know about the data, from the domain."""

    data_shape: tuple[int, ...]  # model-space shape of one example
    num_classes: int = 0  # class labels with a null token, or 0
    obs_dim: int = 0  # observation conditioning (robot policies), or 0
    obs_horizon: int = 1


def build_backbone(
    model_config: BackboneConfig,
    *,
    data_shape: tuple[int, ...],
    num_classes: int = 0,
    obs_dim: int = 0,
    obs_horizon: int = 1,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """The velocity network: the configured backbone, answering with the velocity whatever it predicts."""
    cls = locate(model_config._target_, "model")
    if not hasattr(cls, "from_config"):
        raise ConfigError(f"model._target_={model_config._target_}: not a backbone (no from_config).")
    spec = DataSpec(tuple(int(s) for s in data_shape), num_classes, obs_dim, obs_horizon)
    backbone = cls.from_config(model_config, spec, rngs)
    return with_prediction(backbone, model_config.prediction, model_config.min_remaining)
