"""MeanFlow (Geng et al., 2025): regress the average velocity through its differential identity.

The backbone's ``(t, d)`` inputs carry the interval ``[t, t + d]`` and its output is the average
velocity over it, ``u(z_t, t, d) = (1/d) * integral_t^{t+d} v(z_s, s) ds`` (``u = v`` at d = 0),
the same meaning as a shortcut, so the Euler sampler with ``d = 1/n`` applies unchanged.

The MeanFlow identity (paper Eq. 6), in this repository's convention (noise at t = 0, data at
t = 1; the paper's ``t`` is our ``1 - t`` and its ``r`` our ``1 - t - d``): with the end ``t + d``
held fixed, differentiate ``d * u = integral_t^{t+d} v`` with respect to t:

    u(z_t, t, d) = v(z_t, t) + d * (d/dt) u(z_t, t, d),
    (d/dt) u = (du/dz) v + du/dt - du/dd            (d = end - t shrinks as t grows)

The total derivative is one forward-mode product, ``jax.jvp`` of ``u`` at ``(z_t, t, d)`` with
tangent ``(v, 1, -1)`` (the paper's Eq. 8 with tangent ``(v, 0, 1)`` on ``(z, r, t)``). The paper
regresses ``u`` on the stop-gradient target ``v + d (d/dt) u`` with v replaced by the conditional
velocity ``x_1 - x_0`` (Eq. 9-10; the target is linear in v, so it stays unbiased). Here the same
loss is written as the regression of the *compound* prediction

    V = u - d * sg((d/dt) u)     on     x_1 - x_0,

which is equal in value and in gradient (improved MeanFlow's form), so one ``jax.jvp`` inside the
gradient serves both the prediction and the target. A share ``mean_fraction`` of each batch has
``d > 0`` (t and t + d the sorted pair of two draws, paper Sec. 4.3); the rest is flow matching.

Defaults are the paper's best ImageNet settings (Table 1, Sec. 5): logit-normal times (its
mean -0.4 becomes +0.4 here, the time being reversed), 25% of examples with d > 0, adaptive
weight ``1 / sg(||V - v||^2 + c)^p`` with the error summed over dimensions, p = 1, c = 0.01
(Eq. 11). Classifier-free guidance can be baked into the velocity (Eq. 13, 19): inside
``guidance_interval`` the regressed velocity is ``omega (x1 - x0) + kappa v_c + (1 - omega - kappa) v_u``
with ``v_c, v_u`` the model's own conditional and unconditional instantaneous velocities; the
sampler then adds no guidance of its own (effective scale ``omega / (1 - kappa)``).

The time and step embeddings must be smooth in t and d (the reference embeds raw t and d): the JVP
differentiates them, and a sinusoid of 1000 t (DiT's, the backbones' default) makes ``du/dt``
dominated by its fastest components, so the targets diverge without the adaptive weight. The
objective therefore sets the backbone's t and d sinusoids to ``embedding_scale`` (see
benchmarks/results/meanflow_diagnosis.md). With ``model.prediction=data`` the network's output
x1_hat defines ``u = (x1_hat - z_t) / max(1 - t, min_remaining)``: the JVP differentiates through
that map, so where ``1 - t < min_remaining`` the identity constrains the clipped field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.config import ComponentConfig, require, require_choice
from shortcutlib.nn.embeddings import set_embedding_scales
from shortcutlib.objectives.base import (
    Objective,
    Targets,
    adaptive_loss,
    require_adaptive_weight,
)
from shortcutlib.objectives.common import (
    broadcast_to_x,
    drop_labels,
    interpolate,
    logit_normal_params,
    sample_t,
)
from shortcutlib.objectives.shortcut import bootstrap_size
from shortcutlib.velocity import VelocityFn, null_cond


@dataclass
class Config(ComponentConfig):
    mean_fraction: float = 0.25  # share of each batch with d > 0 (paper Table 1a: 25%)
    t_sampling: str = "logit_normal"  # "uniform" | "logit_normal" for both ends of the interval
    logit_mean: float = 0.4  # logit-normal location (paper -0.4, its time reversed)
    logit_std: float = 1.0
    adaptive_p: float = 1.0  # adaptive loss weight power (paper Table 1e); 0: plain squared error
    adaptive_c: float = 0.01  # on the per-example sum of squared errors
    guidance_omega: float = 1.0  # omega of the baked guidance (Eq. 19); 1 with kappa 0: none
    guidance_kappa: float = 0.0
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])  # t range where guidance is baked
    embedding_scale: Optional[float] = 10.0  # t and d enter the backbone's sinusoids times this (null: the backbone's own)

    def __post_init__(self) -> None:
        require(0.0 <= self.mean_fraction <= 1.0, "mean_fraction", self.mean_fraction, "must be in [0, 1].")
        require_choice("t_sampling", self.t_sampling, ("uniform", "logit_normal"))
        require_adaptive_weight(self)
        require(self.guidance_kappa < 1.0, "guidance_kappa", self.guidance_kappa, "must be below 1.")
        require(len(self.guidance_interval) == 2, "guidance_interval", self.guidance_interval, "must be [t_low, t_high].")


def total_derivative(model: VelocityFn, z: jax.Array, t: jax.Array, d: jax.Array, tangent: jax.Array, cond: Any) -> tuple[jax.Array, jax.Array]:
    """``(u(z, t, d), (d/dt) u)`` along the flow whose velocity at z is ``tangent``, with t + d fixed."""

    def u(z_: jax.Array, t_: jax.Array, d_: jax.Array) -> jax.Array:
        return model(z_, t_, d_, cond)

    return jax.jvp(u, (z, t, d), (tangent, jnp.ones_like(t), -jnp.ones_like(d)))


def meanflow_target(model: VelocityFn, z: jax.Array, t: jax.Array, d: jax.Array, v: jax.Array, cond: Any) -> tuple[jax.Array, jax.Array]:
    """``(u(z, t, d), v + d * (d/dt) u)``: the prediction and the MeanFlow target (Eq. 10, not yet stop-gradient)."""
    pred, du_dt = total_derivative(model, z, t, d, v, cond)
    return pred, v + broadcast_to_x(d, z) * du_dt


def sample_times(key: jax.Array, b: int, cfg: Config) -> jax.Array:
    return sample_t(key, b, logit_normal_params=logit_normal_params(cfg))


def sample_intervals(key: jax.Array, b: int, n_mean: int, cfg: Config, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(t, d)``: the first ``n_mean`` examples span the sorted pair of two draws, the rest have d = 0."""
    ends = sample_times(key, 2 * b, cfg).reshape(2, b).astype(dtype)
    t, end = jnp.min(ends, axis=0), jnp.max(ends, axis=0)
    mean_rows = jnp.arange(b) < n_mean
    return jnp.where(mean_rows, t, ends[0]), jnp.where(mean_rows, end - t, 0.0)


def compound_prediction(model: VelocityFn, targets: Targets) -> jax.Array:
    """``u - d sg((d/dt) u)`` along ``targets.tangent`` (default: the regressed velocity itself); the
    gradient flows through u alone."""
    tangent = targets.v_target if targets.tangent is None else targets.tangent
    u, du_dt = total_derivative(model, targets.x_t, targets.t, targets.d, jax.lax.stop_gradient(tangent), targets.cond)
    return u - broadcast_to_x(targets.d, u) * jax.lax.stop_gradient(du_dt)


class MeanFlow(Objective):
    """The tangent of the total derivative is the regressed (conditional, possibly guided) velocity."""

    Config = Config

    def adapt_backbone(self, backbone: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
        scale = self.config.embedding_scale
        return backbone if scale is None else set_embedding_scales(backbone, scale)

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        k_t, k_noise, k_label = jax.random.split(key, 3)
        t, d = sample_intervals(k_t, b, bootstrap_size(b, cfg.mean_fraction), cfg, x1.dtype)
        x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
        z = interpolate(x0, x1, t)
        labels = drop_labels(k_label, cond, self.class_dropout, self.num_classes)
        velocity = self.guided_velocity(model, z, t, x1 - x0, cond, labels)
        return Targets(x_t=z, t=t, d=d, cond=labels, v_target=velocity, weight=jnp.ones((b,), x1.dtype))

    def guided_velocity(self, model: VelocityFn, z: jax.Array, t: jax.Array, v: jax.Array, cond: Any, labels: Any) -> jax.Array:
        """The velocity regressed (Eq. 19): guidance mixed in with the model's own velocities inside
        the interval, for labelled examples; the conditional velocity elsewhere."""
        cfg = self.config
        if (cfg.guidance_omega == 1.0 and cfg.guidance_kappa == 0.0) or self.num_classes <= 0 or cond is None:
            return v
        zero = jnp.zeros_like(t)
        both = model(jnp.concatenate([z, z]), jnp.concatenate([t, t]), jnp.concatenate([zero, zero]),
                     jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, null_cond(cond, self.num_classes)))
        v_c, v_u = jnp.split(jax.lax.stop_gradient(both), 2)
        guided = cfg.guidance_omega * v + cfg.guidance_kappa * v_c + (1 - cfg.guidance_omega - cfg.guidance_kappa) * v_u
        low, high = cfg.guidance_interval
        labelled = jax.tree.leaves(labels)[0] != self.num_classes
        inside = (t >= low) & (t <= high) & labelled
        return jnp.where(broadcast_to_x(inside, v), guided, v)

    def predict(self, model: VelocityFn, targets: Targets) -> jax.Array:
        return compound_prediction(model, targets)

    def loss(self, model: VelocityFn, targets: Targets) -> jax.Array:
        return adaptive_loss(self.predict(model, targets), targets.v_target, self.config.adaptive_p, self.config.adaptive_c)

    @property
    def baked_guidance(self) -> float:
        return self.config.guidance_omega / (1.0 - self.config.guidance_kappa)
