"""Plain flow matching: regress the instantaneous velocity at d = 0 (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from shortcutlib.config import ComponentConfig, require_choice
from shortcutlib.objectives.base import (
    Objective,
    Targets,
    require_adaptive_weight,
    require_plug_in,
)
from shortcutlib.objectives.common import flow_matching_part, logit_normal_params
from shortcutlib.velocity import VelocityFn


@dataclass
class Config(ComponentConfig):
    t_sampling: str = "uniform"  # "uniform" in [0, 1), "grid" on {0, 1/M, ...} or "logit_normal"
    M: int = 128  # grid resolution when t_sampling == "grid"
    logit_mean: float = 0.4  # logit-normal location and scale when t_sampling == "logit_normal"
    logit_std: float = 1.0  # (MeanFlow's defaults, in this library's time: data at t = 1)
    adaptive_p: float = 0.0  # MeanFlow's adaptive loss weight power (base.adaptive_loss); 0: squared error
    adaptive_c: float = 0.01
    plug_in_fraction: float = 0.0  # share of rows regressing the batch's plug-in marginal velocity (common.velocity_target)
    class_consistent: bool = True  # the plug-in's posterior over data of the example's own class

    def __post_init__(self) -> None:
        require_choice("t_sampling", self.t_sampling, ("uniform", "grid", "logit_normal"))
        require_adaptive_weight(self)
        require_plug_in(self)


class FlowMatching(Objective):
    Config = Config

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        return flow_matching_part(
            key,
            batch["x"],
            batch.get("cond"),
            t_grid=self.config.M if self.config.t_sampling == "grid" else None,
            class_dropout=self.class_dropout,
            num_classes=self.num_classes,
            logit_normal_params=logit_normal_params(self.config),
            plug_in_fraction=self.config.plug_in_fraction,
            class_consistent=self.config.class_consistent,
        )

    def query_sizes(self, num_steps: int) -> np.ndarray:
        # A flow-matching model knows only d = 0: plain Euler on the instantaneous velocity.
        return np.zeros(num_steps)
