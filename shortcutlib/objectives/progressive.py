"""Progressive distillation (Salimans & Ho, 2022), from a flow-matching teacher.

Phase k trains a student whose single step of size ``d = 2^(k+1) / start_steps`` matches two
steps of size ``d / 2`` of a frozen teacher:

    s(x_t, t, d) <- ( T(x_t, t) + T(x_t + (d/2) T(x_t, t), t + d/2) ) / 2     (stop-gradient)

with ``x_t`` on the straight noise-data path and ``t`` on multiples of ``d``. In phase 0 the
teacher is the flow-matching model, queried at d = 0 (plain Euler with ``start_steps`` steps);
in phase k > 0 it is the student of phase k - 1, queried at its own step ``d / 2``. The student
is conditioned on ``d`` and starts from the teacher's weights; each phase halves the number of
steps until one step remains (``log2(start_steps)`` phases), all planned by ``phases`` and run
from one command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.config import ComponentConfig, require_choice
from shortcutlib.objectives.base import Objective, Phase, Targets, teacher_then_students
from shortcutlib.objectives.common import (
    drop_labels,
    interpolate,
    sample_t,
    two_step_velocity,
)
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.velocity import VelocityFn, guided_velocity


@dataclass
class Config(ComponentConfig):
    start_steps: int = 128  # the flow-matching teacher's budget in phase 0 (a power of two)
    t_sampling: str = "grid"  # "grid": t on multiples of the student's step; "uniform" in [0, 1 - d]
    teacher_cfg_scale: float = 1.0  # guidance baked into the phase-0 targets (later phases inherit it)
    teacher_fraction: float = 0.5  # share of train.steps for the teacher; the phases share the rest equally
    init_student: bool = True  # each student starts from its teacher's weights

    def __post_init__(self) -> None:
        require_choice("t_sampling", self.t_sampling, ("grid", "uniform"))
        num_phases(self.start_steps)


def num_phases(start_steps: int) -> int:
    log2_n = math.log2(start_steps)
    if start_steps < 2 or log2_n != int(log2_n):
        raise ValueError(f"start_steps={start_steps}: must be a power of two >= 2, e.g. 128.")
    return int(log2_n)


def student_step(start_steps: int, phase: int) -> float:
    """The step size the student of ``phase`` learns."""
    if not 0 <= phase < num_phases(start_steps):
        raise ValueError(f"phase must be in [0, {num_phases(start_steps) - 1}] for start_steps={start_steps} (got {phase}).")
    return 2.0 ** (phase + 1) / start_steps


class ProgressiveDistillation(Objective):
    """One student phase (``phase``); ``phases`` plans the teacher and every student."""

    Config = Config

    def __init__(self, config: Config | None = None, context=None, *, phase: int = 0):
        super().__init__(config, context)
        self.phase = phase

    def targets(
        self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, *, teacher: VelocityFn | None = None, **_: Any
    ) -> Targets:
        cfg = self.config
        if teacher is None:
            raise ValueError("Progressive distillation needs a trained teacher: its phases train a flow-matching teacher first.")
        x1, cond = batch["x"], batch.get("cond")
        b = x1.shape[0]
        d = student_step(cfg.start_steps, self.phase)
        k_t, k_noise, k_label = jax.random.split(key, 3)
        if cfg.t_sampling == "grid":
            t = sample_t(k_t, b, grid=round(1.0 / d))
        else:
            t = sample_t(k_t, b, t_max=1.0 - d)
        t = t.astype(x1.dtype)
        x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
        x_t = interpolate(x0, x1, t)
        cond = drop_labels(k_label, cond, self.class_dropout, self.num_classes)
        half = jnp.full((b,), d / 2, x1.dtype)
        d_query = jnp.zeros_like(half) if self.phase == 0 else half  # phase 0: the flow-matching teacher
        scale = cfg.teacher_cfg_scale if self.phase == 0 else 1.0

        def velocity(x: jax.Array, tt: jax.Array) -> jax.Array:
            return guided_velocity(teacher, x, tt, d_query, cond, scale, self.num_classes)

        v_target = two_step_velocity(velocity, x_t, t, half)
        return Targets(
            x_t=x_t,
            t=t,
            d=jnp.full((b,), d, x1.dtype),
            cond=cond,
            v_target=jax.lax.stop_gradient(v_target),
            weight=jnp.ones((b,), x1.dtype),
        )

    @property
    def baked_guidance(self) -> float:
        return self.config.teacher_cfg_scale

    def phases(self, total_steps: int) -> list[Phase]:
        students = [ProgressiveDistillation(self.config, self.context, phase=k) for k in range(num_phases(self.config.start_steps))]
        return teacher_then_students(
            total_steps, self.config.teacher_fraction, FlowMatching(context=self.context), students, init_from_teacher=self.config.init_student
        )
