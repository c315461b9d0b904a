"""Improved MeanFlow (iMF; Geng, Lu et al., 2025): MeanFlow's loss on the instantaneous velocity.

MeanFlow regresses the average velocity u on a target built from the *conditional* velocity
``x_1 - x_0``. iMF rewrites the identity ``v = u - d (d/dt) u`` (this repository's convention:
noise at t = 0, data at t = 1; see ``meanflow``) as a prediction of the instantaneous velocity
through the average-velocity network,

    V_theta = u_theta(z_t, t, d) - d * sg( (d/dt) u_theta ),      regressed on   v~ = x_1 - x_0 (+ guidance),

and differentiates along the network's *own* instantaneous velocity ``v_theta(z_t) = u_theta(z_t, t, 0)``
(the paper's parameter-free "boundary" form of its Eq. for the tangent; the released code uses an
auxiliary head instead), so the total derivative no longer carries the noise of ``x_1 - x_0``.
The gradient flows through ``u_theta`` alone (the JVP term and the target are stop-gradient).
With the exact average velocity the compound prediction is the exact instantaneous velocity
(tests check this on Gaussian data).

Guidance as an input condition (paper Sec. 4.2): for class-conditional data the network also
sees the guidance scale ``omega`` (drawn per example with density ``omega^-beta`` on
``[1, guidance_max]``) and the time interval ``[low, high]`` where it applies (``low ~ U[0, 0.5]``,
``high ~ U[0.5, 1]`` for d > 0, the whole ``[0, 1]`` for flow matching), embedded from
``(1 - 1/omega, low, high)``. The regressed velocity is ``v~ = x_1 - x_0 + (1 - 1/omega') (v_c - v_u)``
with ``omega' = omega`` inside the interval and 1 outside, ``v_c`` the network's velocity for the
label and ``omega'``, ``v_u`` for the null label and 1; at the fixed point ``v_c`` is the guided
field ``v_u + omega (v_cond - v_u)``. Sampling feeds the requested scale as that input and applies
no guidance of its own. Defaults: 50% of examples with d > 0, logit-normal times, adaptive weight
as MeanFlow, ``guidance_max = 8`` with ``beta = 1`` (paper, B/2 configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shortcutlib.config import ComponentConfig, require, require_choice
from shortcutlib.nn.embeddings import set_embedding_scales
from shortcutlib.nn.guidance import GUIDANCE_KEY, add_guidance_input
from shortcutlib.objectives.base import (
    Objective,
    SamplePlan,
    Targets,
    adaptive_loss,
    require_adaptive_weight,
)
from shortcutlib.objectives.common import broadcast_to_x, drop_labels, interpolate
from shortcutlib.objectives.meanflow import compound_prediction, sample_intervals
from shortcutlib.objectives.shortcut import bootstrap_size
from shortcutlib.velocity import VelocityFn


@dataclass
class Config(ComponentConfig):
    mean_fraction: float = 0.5  # share of each batch with d > 0 (paper: 50%)
    t_sampling: str = "logit_normal"  # "uniform" | "logit_normal" for both ends of the interval
    logit_mean: float = 0.4  # logit-normal location (paper -0.4, its time reversed)
    logit_std: float = 1.0
    adaptive_p: float = 1.0  # adaptive loss weight power; 0: plain squared error
    adaptive_c: float = 0.01  # on the per-example sum of squared errors
    guidance_max: float = 8.0  # class-conditional data: omega drawn in [1, guidance_max]; 1: no guidance input
    guidance_beta: float = 1.0  # density of omega ~ omega^-beta (1: log-uniform)
    sample_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])  # t range where sampling guidance applies
    embedding_scale: Optional[float] = 10.0  # t and d enter the backbone's sinusoids times this (see meanflow)

    def __post_init__(self) -> None:
        require(0.0 <= self.mean_fraction <= 1.0, "mean_fraction", self.mean_fraction, "must be in [0, 1].")
        require_choice("t_sampling", self.t_sampling, ("uniform", "logit_normal"))
        require_adaptive_weight(self)
        require(self.guidance_max >= 1.0, "guidance_max", self.guidance_max, "must be at least 1 (1: no guidance input).")
        require(len(self.sample_interval) == 2, "sample_interval", self.sample_interval, "must be [t_low, t_high].")


def sample_guidance(key: jax.Array, b: int, maximum: float, beta: float) -> jax.Array:
    """Scales with density proportional to omega^-beta on [1, maximum] (inverse CDF)."""
    u = jax.random.uniform(key, (b,))
    if beta == 1.0:
        return jnp.exp(u * np.log(maximum))
    return (1.0 + u * (maximum ** (1.0 - beta) - 1.0)) ** (1.0 / (1.0 - beta))


def guidance_input(omega: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """The network's guidance input (B, 3): ``1 - 1/omega`` (0 without guidance) and the interval."""
    return jnp.stack([1.0 - 1.0 / omega, low, high], axis=-1)


class ImprovedMeanFlow(Objective):
    Config = Config

    @property
    def guided(self) -> bool:
        return self.num_classes > 0 and self.config.guidance_max > 1.0

    def adapt_backbone(self, backbone: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
        if self.config.embedding_scale is not None:
            set_embedding_scales(backbone, self.config.embedding_scale)
        return add_guidance_input(backbone, rngs) if self.guided else backbone

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        n_mean = bootstrap_size(b, cfg.mean_fraction)
        k_t, k_noise, k_label, k_omega, k_low, k_high = jax.random.split(key, 6)
        t, d = sample_intervals(k_t, b, n_mean, cfg, x1.dtype)
        x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
        z = interpolate(x0, x1, t)
        v = x1 - x0
        zero = jnp.zeros_like(t)
        if not self.guided or cond is None:
            tangent = jax.lax.stop_gradient(model(z, t, zero, cond))  # v_theta, the boundary u(z, t, 0)
            return Targets(z, t, d, cond, v, jnp.ones((b,), x1.dtype), tangent)
        labels = drop_labels(k_label, cond, self.class_dropout, self.num_classes)
        labelled = labels != self.num_classes
        mean_rows = jnp.arange(b) < n_mean
        omega = jnp.where(labelled, sample_guidance(k_omega, b, cfg.guidance_max, cfg.guidance_beta), 1.0)
        low = jnp.where(mean_rows, jax.random.uniform(k_low, (b,), maxval=0.5), 0.0)
        high = jnp.where(mean_rows, jax.random.uniform(k_high, (b,), minval=0.5, maxval=1.0), 1.0)
        inside = jnp.where((t >= low) & (t <= high), omega, 1.0)
        full_low, full_high = jnp.zeros_like(t), jnp.ones_like(t)
        v_c = model(z, t, zero, {"label": labels, GUIDANCE_KEY: guidance_input(inside, full_low, full_high)})
        v_u = model(z, t, zero, {"label": jnp.full_like(labels, self.num_classes), GUIDANCE_KEY: guidance_input(jnp.ones_like(t), full_low, full_high)})
        target = v + broadcast_to_x(1.0 - 1.0 / inside, v) * (v_c - v_u)
        net_cond = {"label": labels, GUIDANCE_KEY: guidance_input(omega, low, high)}
        return Targets(z, t, d, net_cond, jax.lax.stop_gradient(target), jnp.ones((b,), x1.dtype), jax.lax.stop_gradient(v_c))

    def predict(self, model: VelocityFn, targets: Targets) -> jax.Array:
        return compound_prediction(model, targets)  # along the network's own velocity, targets.tangent

    def loss(self, model: VelocityFn, targets: Targets) -> jax.Array:
        return adaptive_loss(self.predict(model, targets), targets.v_target, self.config.adaptive_p, self.config.adaptive_c)

    def sampling_cond(self, cond: Any, cfg_scale: float) -> Any:
        if not self.guided or cond is None:
            return cond
        labels = jnp.asarray(cond)
        n = labels.shape[0]
        low, high = self.config.sample_interval
        omega = jnp.full((n,), cfg_scale, jnp.float32)
        return {"label": labels, GUIDANCE_KEY: guidance_input(omega, jnp.full((n,), low), jnp.full((n,), high))}

    def sample_plan(self, num_steps: int, cfg_scale: float = 1.0) -> SamplePlan:
        plan = super().sample_plan(num_steps, 1.0)  # guidance is an input (sampling_cond), not a mix of two passes
        return plan if self.guided or cfg_scale == 1.0 else super().sample_plan(num_steps, cfg_scale)
