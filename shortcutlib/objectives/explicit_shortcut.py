"""An explicit shortcut objective in the spirit of ESC (Lin et al., "Explicit Shortcut Models").

ESC reads the shortcut model's self-consistency in the limit of vanishing half steps: one step of
``d`` must equal a first step along the velocity and the rest along the shortcut, whose limit is
the MeanFlow identity ``u = v + d (d/dt) u`` (this repository's convention, see ``meanflow``). The
target is MeanFlow's, written as its compound prediction ``u - d sg((d/dt) u)`` regressed on the
velocity; ESC changes which velocity:

- **plug-in velocity**: on a share ``plug_in_fraction`` of the examples the conditional velocity
  ``x_1 - x_0`` is replaced by a minibatch estimate of the *marginal* velocity,
  ``v_plug(z) = sum_i w_i (x_1^i - z) / (1 - t)`` with ``w_i`` proportional to
  ``exp(-|z - t x_1^i|^2 / (2 (1 - t)^2))`` over the batch's data (the posterior of each data point
  given z under the Gaussian path); with ``class_consistent`` only data of the example's own class
  enter (ESC draws single-class batches instead). It lowers the variance of the regressed velocity
  and of the tangent of the total derivative;
- **jumps to the data first**: during the first ``endpoint_fraction`` of training, an interval
  ``[t, t + d]`` is stretched to end at the data (t + d = 1) with probability
  ``(2 / pi) arccos(step / K)`` (ESC's "term-zero" schedule), so one-step jumps are learned early.

Times, shares and the adaptive weight are MeanFlow's defaults (logit-normal, 25% with d > 0,
p = 1); ESC's learned per-time uncertainty weight (an extra network head) is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.config import require
from shortcutlib.objectives.base import Targets, require_plug_in
from shortcutlib.objectives.common import drop_labels, interpolate, velocity_target
from shortcutlib.objectives.meanflow import Config as MeanFlowConfig
from shortcutlib.objectives.meanflow import MeanFlow, sample_intervals
from shortcutlib.objectives.shortcut import bootstrap_size
from shortcutlib.velocity import VelocityFn


@dataclass
class Config(MeanFlowConfig):
    plug_in_fraction: float = 0.5  # share of examples regressing the plug-in velocity (ESC-B/2: 0.5)
    class_consistent: bool = True  # plug-in posterior over examples of the same class only
    endpoint_fraction: float = 0.02  # first share of training that stretches intervals to the data (ESC: 20k of 1.2M steps)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_plug_in(self)
        require(0.0 <= self.endpoint_fraction <= 1.0, "endpoint_fraction", self.endpoint_fraction, "must be in [0, 1].")


class ExplicitShortcut(MeanFlow):
    Config = Config

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, *, step: Any = 0, **_: Any) -> Targets:
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        k_t, k_noise, k_label, k_end, k_plug = jax.random.split(key, 5)
        t, d = sample_intervals(k_t, b, bootstrap_size(b, cfg.mean_fraction), cfg, x1.dtype)
        horizon = max(cfg.endpoint_fraction * self.context.total_steps, 1.0)
        stretch = (2 / jnp.pi) * jnp.arccos(jnp.clip(jnp.asarray(step, jnp.float32) / horizon, 0.0, 1.0))
        to_data = (d > 0) & (jax.random.uniform(k_end, (b,)) < stretch)
        d = jnp.where(to_data, 1.0 - t, d)
        x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
        z = interpolate(x0, x1, t)
        labels = drop_labels(k_label, cond, self.class_dropout, self.num_classes)
        v = velocity_target(k_plug, z, t, x0, x1, cond, plug_in_fraction=cfg.plug_in_fraction,
                            class_consistent=cfg.class_consistent, num_classes=self.num_classes)
        velocity = self.guided_velocity(model, z, t, v, cond, labels)
        return Targets(x_t=z, t=t, d=d, cond=labels, v_target=jax.lax.stop_gradient(velocity), weight=jnp.ones((b,), x1.dtype))
