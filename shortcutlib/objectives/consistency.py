"""Consistency training (CT) and consistency distillation (CD), cast as velocity regression.

The consistency function maps any point of an ODE trajectory to its end at the data (t = 1).
It is parameterised through the backbone's average velocity to the end, ``d = 1 - t``:

    f(x_t, t) = x_t + (1 - t) * F(x_t, t, d = 1 - t)

so ``f(x, 1) = x`` holds by construction (the boundary condition) and one Euler step of size 1
from noise is ``f(x_0, 0)``: the one-step sample.

Loss. For neighbouring grid times ``t < t'`` (t' is one interval nearer the data),

    lambda(t) (1 - t)^2 |F_theta(x_t, t, 1 - t) - v_target|^2,   v_target = (f_target(x_t', t') - x_t) / (1 - t)

is the consistency loss ``lambda(t) |f_theta(x_t, t) - f_target(x_t', t')|^2``. The default
``lambda(t) = 1 / (1 - t)^2`` (``weighting="velocity"``, unit weight on F) grows towards the data,
like improved CT's ``1 / (sigma_{i+1} - sigma_i)``: the boundary condition enters near t = 1, and
``lambda = 1`` (``weighting="consistency"``) weighs that region by (1 - t)^2 ~ 1/N^2, so it barely
trains and the model stays near its initialisation on short budgets. The target is
stop-gradient: from the live weights (improved CT) or the EMA weights (``target_ema``).
- CT: ``x_t'`` lies on the same straight noise-data pair, ``(1 - t') x_0 + t' x_1``.
- CD: ``x_t'`` is one ODE step (Euler or Heun) of a frozen flow-matching teacher from ``x_t``.

Discretisation. The number of intervals N(k) at training step k is a schedule:
``"doubling"`` is improved CT's (Song & Dhariwal 2023), ``N(k) = min(s0 * 2^floor(k / K'), s1)``
with ``K' = floor(K / (log2(s1 / s0) + 1))`` and K = ``total_steps``; ``"constant"`` is N = s1.
Grid times are ``t_i = i / N``.

Sampling. Multistep consistency sampling with the noise implied by the current state,
``x_1_hat = f(x_t, t)``, ``z_hat = (x_t - t x_1_hat) / (1 - t)``, ``x_u = (1 - u) z_hat + u x_1_hat``,
is exactly the Euler step ``x_u = x_t + (u - t) F(x_t, t, 1 - t)``. So the Euler sampler gives
it when the model is queried at ``d = 1 - t`` instead of the step size: ``sampler_query`` does
that remapping, and the sampler must apply it (``inference.make_sample_fn`` reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.common import (
    Targets,
    VelocityFn,
    broadcast_to_x,
    drop_labels,
    guided_velocity,
    interpolate,
    two_step_velocity,
)

MODES = ("training", "distillation")


@dataclass(frozen=True)
class Config:
    mode: str = "training"  # "training" (CT, no teacher) | "distillation" (CD, needs a teacher)
    schedule: str = "doubling"  # "doubling" (improved CT) | "constant" (N = s1)
    s0: int = 10  # initial number of intervals of the doubling schedule
    s1: int = 1280  # final (maximum) number of intervals
    total_steps: int = 0  # K in the doubling schedule; set to train.steps
    target_ema: bool = False  # target f from EMA weights (original CT/CD) or live stop-gradient weights (improved CT)
    weighting: str = "velocity"  # "velocity": lambda(t) = 1 / (1 - t)^2; "consistency": lambda = 1 (plain loss on f)
    teacher_solver: str = "heun"  # CD: "euler" | "heun" step of the teacher ODE
    teacher_cfg_scale: float = 1.0  # CD: classifier-free guidance baked into the teacher step
    class_dropout: float = 0.0
    num_classes: int = 0


CONDITION_ON_D = True


def sampler_query(model: VelocityFn) -> VelocityFn:
    """How the Euler sampler must query a consistency model: at d = 1 - t, whatever the step."""

    def query(x: jax.Array, t: jax.Array, d: jax.Array, cond: Any) -> jax.Array:
        return model(x, t, 1.0 - t, cond)

    return query


def consistency_fn(model: VelocityFn, x: jax.Array, t: jax.Array, cond: Any) -> jax.Array:
    """f(x, t) = x + (1 - t) F(x, t, 1 - t); exactly x at t = 1 (the model is not trusted there)."""
    remaining = 1.0 - t
    jump = x + broadcast_to_x(remaining, x) * model(x, t, remaining, cond)
    return jnp.where(broadcast_to_x(t >= 1.0, x), x, jump)


def num_intervals(step: jax.Array | int, cfg: Config) -> jax.Array:
    """N(k): the number of discretisation intervals at training step k."""
    if cfg.schedule == "constant":
        return jnp.asarray(cfg.s1, jnp.int32)
    if cfg.schedule != "doubling":
        raise ValueError(f"Unknown consistency schedule '{cfg.schedule}'. Accepted: doubling, constant.")
    if cfg.total_steps < 1:
        raise ValueError("The doubling schedule needs objective.total_steps (set it to train.steps).")
    stages = int(math.floor(math.log2(cfg.s1 / cfg.s0))) + 1
    per_stage = max(cfg.total_steps // stages, 1)
    doublings = jnp.minimum(jnp.asarray(step, jnp.int32) // per_stage, stages - 1)
    return jnp.minimum(cfg.s0 * jnp.left_shift(1, doublings), cfg.s1).astype(jnp.int32)


def teacher_step(teacher: VelocityFn, x: jax.Array, t: jax.Array, h: jax.Array, cond: Any, cfg: Config) -> jax.Array:
    """One step of size h of the teacher's probability-flow ODE (instantaneous velocity, d = 0)."""
    zero = jnp.zeros_like(t)

    def velocity(x_: jax.Array, t_: jax.Array) -> jax.Array:
        return guided_velocity(teacher, x_, t_, zero, cond, cfg.teacher_cfg_scale, cfg.num_classes)

    if cfg.teacher_solver == "euler":
        v = velocity(x, t)
    elif cfg.teacher_solver == "heun":
        v = two_step_velocity(velocity, x, t, h)
    else:
        raise ValueError(f"Unknown teacher_solver '{cfg.teacher_solver}'. Accepted: euler, heun.")
    return x + broadcast_to_x(h, x) * v


def targets(
    key: jax.Array,
    batch: dict[str, Any],
    model: VelocityFn,
    ema_model: VelocityFn,
    cfg: Config,
    *,
    step: jax.Array | int = 0,
    teacher: VelocityFn | None = None,
    **_: Any,
) -> Targets:
    if cfg.mode not in MODES:
        raise ValueError(f"Unknown consistency mode '{cfg.mode}'. Accepted: {', '.join(MODES)}.")
    if cfg.mode == "distillation" and teacher is None:
        raise ValueError("Consistency distillation needs a trained teacher: run objective=consistency_distillation, "
                         "which trains a flow-matching teacher first.")
    x1, cond = batch["x"], batch.get("cond")
    b = x1.shape[0]
    k_i, k_noise, k_label = jax.random.split(key, 3)
    n = num_intervals(step, cfg)
    i = jax.random.randint(k_i, (b,), 0, n)
    t = (i / n).astype(x1.dtype)
    t_next = ((i + 1) / n).astype(x1.dtype)
    x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
    cond = drop_labels(k_label, cond, cfg.class_dropout, cfg.num_classes)
    x_t = interpolate(x0, x1, t)
    if cfg.mode == "training":
        x_next = interpolate(x0, x1, t_next)
    else:
        x_next = teacher_step(teacher, x_t, t, t_next - t, cond, cfg)
    target_model = ema_model if cfg.target_ema else model
    f_target = consistency_fn(target_model, x_next, t_next, cond)
    remaining = 1.0 - t  # >= 1/N > 0
    v_target = (f_target - x_t) / broadcast_to_x(remaining, x_t)
    if cfg.weighting == "consistency":
        weight = remaining**2
    elif cfg.weighting == "velocity":
        weight = jnp.ones((b,), x1.dtype)
    else:
        raise ValueError(f"Unknown weighting '{cfg.weighting}'. Accepted: consistency, velocity.")
    return Targets(x_t=x_t, t=t, d=remaining, cond=cond, v_target=jax.lax.stop_gradient(v_target), weight=weight)
