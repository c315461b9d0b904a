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
with ``K' = floor(K / (log2(s1 / s0) + 1))`` and K the training steps of the phase; ``"constant"`` is N = s1.
Grid times are ``t_i = i / N``.

Sampling. Multistep consistency sampling with the noise implied by the current state,
``x_1_hat = f(x_t, t)``, ``z_hat = (x_t - t x_1_hat) / (1 - t)``, ``x_u = (1 - u) z_hat + u x_1_hat``,
is exactly the Euler step ``x_u = x_t + (u - t) F(x_t, t, 1 - t)``. So the Euler sampler gives
it when the model is queried at ``d = 1 - t`` instead of the step size (``query_sizes``).

Consistency distillation trains its flow-matching teacher first (``phases``): one command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shortcutlib.config import ComponentConfig, require, require_choice
from shortcutlib.objectives.base import Objective, Phase, Targets, teacher_then_students
from shortcutlib.objectives.common import (
    broadcast_to_x,
    drop_labels,
    interpolate,
    two_step_velocity,
)
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.velocity import VelocityFn, guided_velocity

MODES = ("training", "distillation")


@dataclass
class Config(ComponentConfig):
    mode: str = "training"  # "training" (CT, no teacher) | "distillation" (CD: a flow-matching teacher first)
    schedule: str = "doubling"  # "doubling" (improved CT) | "constant" (N = s1)
    s0: int = 10  # initial number of intervals of the doubling schedule
    s1: int = 1280  # final (maximum) number of intervals
    target_ema: bool = False  # target f from EMA weights (original CT/CD) or live stop-gradient weights (improved CT)
    weighting: str = "velocity"  # "velocity": lambda(t) = 1 / (1 - t)^2; "consistency": lambda = 1 (plain loss on f)
    teacher_solver: str = "heun"  # CD: "euler" | "heun" step of the teacher ODE
    teacher_cfg_scale: float = 1.0  # CD: classifier-free guidance baked into the teacher step
    teacher_fraction: float = 0.5  # CD: share of train.steps spent on the teacher
    init_student: bool = True  # CD: the student starts from the teacher's weights

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)
        require_choice("schedule", self.schedule, ("doubling", "constant"))
        require_choice("weighting", self.weighting, ("velocity", "consistency"))
        require_choice("teacher_solver", self.teacher_solver, ("euler", "heun"))
        require(self.schedule == "constant" or 1 <= self.s0 <= self.s1, "s0", self.s0, f"must be in [1, s1={self.s1}].")


def consistency_fn(model: VelocityFn, x: jax.Array, t: jax.Array, cond: Any) -> jax.Array:
    """f(x, t) = x + (1 - t) F(x, t, 1 - t); exactly x at t = 1 (the model is not trusted there)."""
    remaining = 1.0 - t
    jump = x + broadcast_to_x(remaining, x) * model(x, t, remaining, cond)
    return jnp.where(broadcast_to_x(t >= 1.0, x), x, jump)


def num_intervals(step: jax.Array | int, cfg: Config, total_steps: int) -> jax.Array:
    """N(k): the number of discretisation intervals at training step k of ``total_steps``."""
    if cfg.schedule == "constant":
        return jnp.asarray(cfg.s1, jnp.int32)
    if total_steps < 1:
        raise ValueError("The doubling schedule needs the number of training steps of its phase.")
    stages = int(math.floor(math.log2(cfg.s1 / cfg.s0))) + 1
    per_stage = max(total_steps // stages, 1)
    doublings = jnp.minimum(jnp.asarray(step, jnp.int32) // per_stage, stages - 1)
    return jnp.minimum(cfg.s0 * jnp.left_shift(1, doublings), cfg.s1).astype(jnp.int32)


def teacher_step(teacher: VelocityFn, x: jax.Array, t: jax.Array, h: jax.Array, cond: Any, cfg: Config, num_classes: int) -> jax.Array:
    """One step of size h of the teacher's probability-flow ODE (instantaneous velocity, d = 0)."""
    zero = jnp.zeros_like(t)

    def velocity(x_: jax.Array, t_: jax.Array) -> jax.Array:
        return guided_velocity(teacher, x_, t_, zero, cond, cfg.teacher_cfg_scale, num_classes)

    v = velocity(x, t) if cfg.teacher_solver == "euler" else two_step_velocity(velocity, x, t, h)
    return x + broadcast_to_x(h, x) * v


class Consistency(Objective):
    Config = Config

    def targets(
        self,
        key: jax.Array,
        batch: dict[str, Any],
        model: VelocityFn,
        ema_model: VelocityFn,
        *,
        step: jax.Array | int = 0,
        teacher: VelocityFn | None = None,
        **_: Any,
    ) -> Targets:
        cfg = self.config
        if cfg.mode == "distillation" and teacher is None:
            raise ValueError("Consistency distillation needs a trained teacher: its phases train a flow-matching teacher first.")
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        k_i, k_noise, k_label = jax.random.split(key, 3)
        n = num_intervals(step, cfg, self.context.total_steps)
        i = jax.random.randint(k_i, (b,), 0, n)
        t = (i / n).astype(x1.dtype)
        t_next = ((i + 1) / n).astype(x1.dtype)
        x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
        cond = drop_labels(k_label, cond, self.class_dropout, self.num_classes)
        x_t = interpolate(x0, x1, t)
        if cfg.mode == "training":
            x_next = interpolate(x0, x1, t_next)
        else:
            x_next = teacher_step(teacher, x_t, t, t_next - t, cond, cfg, self.num_classes)
        target_model = ema_model if cfg.target_ema else model
        f_target = consistency_fn(target_model, x_next, t_next, cond)
        remaining = 1.0 - t  # >= 1/N > 0
        v_target = (f_target - x_t) / broadcast_to_x(remaining, x_t)
        weight = remaining**2 if cfg.weighting == "consistency" else jnp.ones((b,), x1.dtype)
        return Targets(x_t=x_t, t=t, d=remaining, cond=cond, v_target=jax.lax.stop_gradient(v_target), weight=weight)

    @property
    def baked_guidance(self) -> float:
        return self.config.teacher_cfg_scale if self.config.mode == "distillation" else 1.0

    def query_sizes(self, num_steps: int) -> np.ndarray:
        """Queried at d = 1 - t whatever the step: the Euler step is then multistep consistency sampling."""
        return 1.0 - np.arange(num_steps) / num_steps

    def phases(self, total_steps: int) -> list[Phase]:
        if self.config.mode == "training":
            return super().phases(total_steps)
        return teacher_then_students(
            total_steps, self.config.teacher_fraction, FlowMatching(context=self.context), [self], init_from_teacher=self.config.init_student
        )
