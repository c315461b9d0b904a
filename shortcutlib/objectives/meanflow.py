"""MeanFlow (Geng et al., 2025): regress the average velocity through its differential identity.

The backbone's ``(t, d)`` inputs carry the interval ``[t, t + d]`` and its output is the average
velocity over it, ``u(z_t, t, d) = (1/d) * integral_t^{t+d} v(z_s, s) ds`` (``u = v`` at d = 0),
the same meaning as a shortcut, so the Euler sampler with ``d = 1/n`` applies unchanged.

The MeanFlow identity, in this repository's convention (noise at t = 0, data at t = 1): with the
end ``t + d`` held fixed, differentiate ``d * u = integral_t^{t+d} v`` with respect to t:

    u(z_t, t, d) = v(z_t, t) + d * (d/dt) u(z_t, t, d),
    (d/dt) u = (du/dz) v + du/dt - du/dd            (d = end - t shrinks as t grows)

The total derivative is one forward-mode product, ``jax.jvp`` of ``u`` at ``(z_t, t, d)`` with
tangent ``(v, 1, -1)``. Training replaces v by the conditional velocity ``x_1 - x_0`` (the target
is linear in v, so it stays unbiased) and regresses the stop-gradient target
``v + d * (d/dt) u``. A share ``mean_fraction`` of each batch has ``d > 0`` (t and t + d the
sorted pair of two draws); the rest is flow matching at d = 0. Optional adaptive weights
``1 / (err + c)^p`` (the paper's p = 1) use the prediction the JVP already computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.config import ComponentConfig, require_choice
from shortcutlib.objectives.base import Objective, Targets
from shortcutlib.objectives.common import broadcast_to_x, concat, drop_labels, flow_matching_part, interpolate, take
from shortcutlib.objectives.shortcut import bootstrap_size
from shortcutlib.velocity import VelocityFn


@dataclass
class Config(ComponentConfig):
    mean_fraction: float = 0.25  # share of each batch with d > 0 (the paper's best: 25%)
    t_sampling: str = "uniform"  # "uniform" | "logit_normal" for both ends of the interval
    logit_mean: float = 0.4  # logit-normal location; the paper's -0.4 with its time reversed
    logit_std: float = 1.0
    adaptive_p: float = 1.0  # adaptive loss weight power; 0 disables
    adaptive_c: float = 1e-3
    jvp_ema: bool = False  # differentiate the EMA model instead of the live one

    def __post_init__(self) -> None:
        require_choice("t_sampling", self.t_sampling, ("uniform", "logit_normal"))


def meanflow_target(model: VelocityFn, z: jax.Array, t: jax.Array, d: jax.Array, v: jax.Array, cond: Any) -> tuple[jax.Array, jax.Array]:
    """``(u(z, t, d), v + d * (d/dt) u)``: the prediction and the MeanFlow target (not yet stop-gradient)."""

    def u(z_: jax.Array, t_: jax.Array, d_: jax.Array) -> jax.Array:
        return model(z_, t_, d_, cond)

    pred, du_dt = jax.jvp(u, (z, t, d), (v, jnp.ones_like(t), -jnp.ones_like(d)))
    return pred, v + broadcast_to_x(d, z) * du_dt


def sample_times(key: jax.Array, b: int, cfg: Config) -> jax.Array:
    if cfg.t_sampling == "uniform":
        return jax.random.uniform(key, (b,))
    if cfg.t_sampling == "logit_normal":
        return jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(key, (b,)))
    raise ValueError(f"Unknown t_sampling '{cfg.t_sampling}'. Accepted: uniform, logit_normal.")


def per_example_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.square(pred - target).reshape(pred.shape[0], -1).mean(axis=1)


def mean_part(
    key: jax.Array, x1: jax.Array, cond: Any, model: VelocityFn, cfg: Config, *, class_dropout: float = 0.0, num_classes: int = 0
) -> tuple[Targets, jax.Array]:
    """Targets for intervals with d > 0 and the model's current prediction on them."""
    k_t, k_noise, k_label = jax.random.split(key, 3)
    b = x1.shape[0]
    ends = sample_times(k_t, 2 * b, cfg).reshape(2, b).astype(x1.dtype)
    t, end = jnp.min(ends, axis=0), jnp.max(ends, axis=0)
    d = end - t
    x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
    z = interpolate(x0, x1, t)
    cond = drop_labels(k_label, cond, class_dropout, num_classes)
    pred, target = meanflow_target(model, z, t, d, x1 - x0, cond)
    tg = Targets(x_t=z, t=t, d=d, cond=cond, v_target=jax.lax.stop_gradient(target), weight=jnp.ones((b,), x1.dtype))
    return tg, pred


class MeanFlow(Objective):
    Config = Config

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        """Average-velocity targets on the first examples, flow matching at d = 0 on the rest."""
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        n_mean = bootstrap_size(b, cfg.mean_fraction)
        net = ema_model if cfg.jvp_ema else model
        k_fm, k_mean, k_fm_t = jax.random.split(key, 3)
        parts, preds = [], []
        if n_mean > 0:
            tg, pred = mean_part(
                k_mean, x1[:n_mean], take(cond, slice(0, n_mean)), net, cfg, class_dropout=self.class_dropout, num_classes=self.num_classes
            )
            parts.append(tg)
            preds.append(pred)
        if n_mean < b:
            fm = flow_matching_part(
                k_fm, x1[n_mean:], take(cond, slice(n_mean, None)), t_grid=None, class_dropout=self.class_dropout, num_classes=self.num_classes
            )
            if cfg.t_sampling != "uniform":  # same noise (x0 = x1 - v), times from the chosen density
                t_fm = sample_times(k_fm_t, b - n_mean, cfg).astype(x1.dtype)
                fm = fm._replace(t=t_fm, x_t=interpolate(x1[n_mean:] - fm.v_target, x1[n_mean:], t_fm))
            parts.append(fm)
            if cfg.adaptive_p > 0:
                preds.append(net(fm.x_t, fm.t, fm.d, fm.cond))
        out = parts[0] if len(parts) == 1 else Targets(*concat([list(p) for p in parts]))
        if cfg.adaptive_p > 0:
            pred = preds[0] if len(preds) == 1 else jnp.concatenate(preds)
            err = per_example_error(pred, out.v_target)
            out = out._replace(weight=jax.lax.stop_gradient(1.0 / (err + cfg.adaptive_c) ** cfg.adaptive_p))
        return out
