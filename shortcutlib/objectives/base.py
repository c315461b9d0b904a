"""The Objective contract: training targets, how the sampler queries the model, training phases.

Every objective reduces a batch to ``Targets(x_t, t, d, cond, v_target, weight)``; the loss is
the weighted MSE of the model's prediction at ``(x_t, t, d, cond)`` to ``v_target``. Sampling
with a budget of ``n`` steps is ``n`` Euler steps of size ``1/n`` at times ``i/n``; the objective
says which step size ``d`` each step feeds the model (``query_sizes``) and whether the state
starts from noise. Methods that need a trained teacher declare their training ``phases``; the
trainer runs them without knowing any objective by name.

An objective is a class with a nested ``Config`` dataclass; a config file names it with
``_target_``, so adding one is one module plus one config file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shortcutlib.config import ComponentConfig, require
from shortcutlib.velocity import VelocityFn


class Targets(NamedTuple):
    """What the loss regresses: ``weight * |prediction(x_t, t, d, cond) - v_target|^2``."""

    x_t: jax.Array
    t: jax.Array  # (B,)
    d: jax.Array  # (B,)
    cond: Any
    v_target: jax.Array
    weight: jax.Array  # (B,)
    tangent: Any = None  # a velocity the prediction differentiates along (MeanFlow-type objectives), or None


@dataclass(frozen=True)
class ObjectiveContext:
    """Facts from outside the objective's own config: the data and the phase it trains in."""

    num_classes: int = 0  # > 0: class labels, with label num_classes the null token
    class_dropout: float = 0.0  # share of labels replaced by the null token (classifier-free guidance)
    total_steps: int = 0  # training steps of the phase this objective trains in


class Teacher(NamedTuple):
    """A trained phase, handed to the next one: its network and its (EMA) weights."""

    graphdef: nnx.GraphDef
    params: Any
    objective: Objective


@dataclass(frozen=True)
class Phase:
    """One training phase. The last phase of a plan is the run itself (``directory=""``)."""

    name: str
    objective: Objective
    steps: int
    directory: str = ""  # relative to the run directory
    uses_teacher: bool = False  # the previous phase's EMA weights are its frozen teacher
    init_from_teacher: bool = False  # start from the previous phase's EMA weights
    # (domain, teacher, run_dir, seed) -> the domain this phase trains on (e.g. reflow's stored pairs)
    prepare_data: Callable[[Any, Teacher, Path, int], Any] | None = None


@dataclass(frozen=True)
class SamplePlan:
    """What each of the ``n`` Euler steps feeds the model: step size ``d_i`` and guidance scale."""

    d: tuple[float, ...]
    cfg_scale: tuple[float, ...]

    @property
    def num_steps(self) -> int:
        return len(self.d)


class Objective:
    """Base class of every objective; subclasses implement ``targets`` and override what differs."""

    Config: ClassVar[type] = ComponentConfig
    starts_from_noise: ClassVar[bool] = True  # False: the sampler starts from zeros (MSE behaviour cloning)

    def __init__(self, config: Any = None, context: ObjectiveContext | None = None):
        self.config = self.Config() if config is None else config
        self.context = ObjectiveContext() if context is None else context

    # -- training -------------------------------------------------------------------------------
    def targets(
        self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, *, step: jax.Array, teacher: VelocityFn | None = None
    ) -> Targets:
        raise NotImplementedError

    def predict(self, model: VelocityFn, targets: Targets) -> jax.Array:
        """What the loss compares with ``v_target``; the gradient flows through it."""
        return model(targets.x_t, targets.t, targets.d, targets.cond)

    def loss(self, model: VelocityFn, targets: Targets) -> jax.Array:
        """The weighted squared error; objectives whose config sets ``adaptive_p`` > 0 weight each
        example by MeanFlow's adaptive weight instead (see ``adaptive_loss``)."""
        p = getattr(self.config, "adaptive_p", 0.0)
        if p:
            return adaptive_loss(self.predict(model, targets), targets.v_target, p, self.config.adaptive_c, targets.weight,
                                 shared=self.adaptive_shared_rows(targets))
        return weighted_mse(self.predict(model, targets), targets)

    def adaptive_shared_rows(self, targets: Targets) -> jax.Array | None:
        """Rows that take the mean adaptive weight of the others (``adaptive_loss``'s ``shared``); none by default."""
        return None

    def adapt_backbone(self, backbone: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
        """The network this objective trains; by default the backbone as built (an objective may add
        an input, e.g. the guidance scale)."""
        return backbone

    def phases(self, total_steps: int) -> list[Phase]:
        """The training plan; one phase unless the method needs a trained teacher."""
        return [Phase("main", self.with_context(total_steps=total_steps), total_steps)]

    def stages(self) -> list[tuple[int, Objective]]:
        """``(first step, objective)`` of each stage of this objective's phase, in order from step 0: a
        curriculum within one run. The trainer compiles one step per stage and switches at those steps,
        carrying the weights, EMA, optimizer state and learning-rate schedule across (``phases`` start
        afresh instead). One stage by default."""
        return [(0, self)]

    def with_context(self, **changes: Any) -> Objective:
        """The same objective with some context facts changed (e.g. the steps of its phase)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.context = dataclasses.replace(self.context, **changes)
        return clone

    # -- sampling -------------------------------------------------------------------------------
    def query_sizes(self, num_steps: int) -> np.ndarray:
        """The ``d`` fed at each of ``num_steps`` Euler steps; by default the step size ``1/n``."""
        return np.full(num_steps, 1.0 / num_steps)

    def sampling_cond(self, cond: Any, cfg_scale: float) -> Any:
        """The model's conditioning when sampling with guidance ``cfg_scale`` (by default ``cond``
        itself; an objective that takes guidance as an input adds it here)."""
        return cond

    @property
    def baked_guidance(self) -> float:
        """Guidance scale baked into the targets of ``d > 0`` queries (1: none)."""
        return 1.0

    def sample_plan(self, num_steps: int, cfg_scale: float = 1.0) -> SamplePlan:
        """Step sizes and guidance for a budget. Guidance is applied once: where it is baked into
        the targets of ``d > 0``, only queries of the instantaneous velocity (``d = 0``) are guided."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
        d = np.asarray(self.query_sizes(num_steps), np.float64)
        if self.baked_guidance != 1.0:
            scales = np.where(d == 0.0, cfg_scale, 1.0)
        else:
            scales = np.full(num_steps, cfg_scale)
        return SamplePlan(tuple(float(v) for v in d), tuple(float(s) for s in scales))

    # -- shorthands ---------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.context.num_classes

    @property
    def class_dropout(self) -> float:
        return self.context.class_dropout


def stage_index(stages: list[tuple[int, Objective]], step: int) -> int:
    """Which of ``stages`` (``Objective.stages``) trains step ``step`` (0-based)."""
    return max(k for k, (start, _) in enumerate(stages) if start <= step or k == 0)


def weighted_mse(pred: jax.Array, targets: Targets) -> jax.Array:
    """Mean over examples of weight * mean squared error over the example's dimensions."""
    err = jnp.square(pred.astype(jnp.float32) - jax.lax.stop_gradient(targets.v_target).astype(jnp.float32))
    per_example = err.reshape(err.shape[0], -1).mean(axis=1)
    return jnp.sum(per_example * targets.weight) / jnp.maximum(jnp.sum(targets.weight), 1e-8)


def adaptive_loss(
    pred: jax.Array, target: jax.Array, p: float, c: float, weight: jax.Array | None = None, shared: jax.Array | None = None
) -> jax.Array:
    """Weighted mean over examples of ``e / sg(e + c)^p``, e the example's summed squared error
    (MeanFlow, Geng et al. 2025, Eq. 11); p = 0 is the summed squared error. With p = 1 each
    example's gradient is that of ``log(e + c)`` and with p = 1/2 that of ``2 sqrt(e + c)`` (a
    pseudo-Huber loss), so the minimiser leaves the mean of the targets for a median (p = 1/2) or
    their modes (p = 1; benchmarks/results/meanflow_diagnosis.md). Rows where the boolean mask
    ``shared`` is set divide by the mean ``sg(e + c)^p`` of the other rows instead of their own."""
    err = jnp.square(pred.astype(jnp.float32) - jax.lax.stop_gradient(target).astype(jnp.float32))
    per_example = err.reshape(err.shape[0], -1).sum(axis=1)
    if p != 0:
        norm = jax.lax.stop_gradient(per_example + c) ** p
        if shared is not None:
            own = jnp.sum(~shared)
            pooled = jnp.where(own > 0, jnp.sum(jnp.where(shared, 0.0, norm)) / jnp.maximum(own, 1), jnp.mean(norm))
            norm = jnp.where(shared, pooled, norm)
        per_example = per_example / norm
    if weight is None:
        return per_example.mean()
    return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1e-8)


def require_adaptive_weight(config: Any) -> None:
    """One-line errors for an ``adaptive_p`` / ``adaptive_c`` pair (see ``adaptive_loss``)."""
    require(config.adaptive_p >= 0, "adaptive_p", config.adaptive_p, "must be >= 0 (0: plain squared error; MeanFlow uses 1).")
    require(config.adaptive_c > 0, "adaptive_c", config.adaptive_c, "must be > 0 (MeanFlow uses 0.01).")


def require_plug_in(config: Any) -> None:
    """One-line error for a ``plug_in_fraction`` (see ``common.velocity_target``)."""
    require(0.0 <= config.plug_in_fraction <= 1.0, "plug_in_fraction", config.plug_in_fraction,
            "must be in [0, 1] (0: the conditional velocity x1 - x0 on every row).")


def split_steps(total: int, teacher_fraction: float, num_students: int) -> tuple[int, list[int]]:
    """Teacher steps and the steps of each student phase; they add up to ``total``."""
    if not 0.0 < teacher_fraction < 1.0:
        raise ValueError(f"objective.teacher_fraction must be in (0, 1), got {teacher_fraction}.")
    teacher = int(round(total * teacher_fraction))
    base, extra = divmod(total - teacher, num_students)
    students = [base + (1 if i < extra else 0) for i in range(num_students)]
    if teacher < 1 or min(students) < 1:
        raise ValueError(
            f"train.steps={total} is too few for a teacher ({teacher_fraction:.0%}) and {num_students} student phase(s); "
            "raise train.steps."
        )
    return teacher, students


def teacher_then_students(
    total_steps: int,
    teacher_fraction: float,
    teacher: Objective,
    students: list[Objective],
    *,
    init_from_teacher: bool,
    prepare_data: Callable[[Any, Teacher, Path, int], Any] | None = None,
) -> list[Phase]:
    """A flow-matching (or other) teacher in ``teacher/``, then student phases, each taught by
    the phase before it; intermediate students in ``phase_<k>/``, the last one is the run."""
    teacher_steps, student_steps = split_steps(total_steps, teacher_fraction, len(students))
    plan = [Phase("teacher", teacher.with_context(total_steps=teacher_steps), teacher_steps, "teacher")]
    for k, (student, steps) in enumerate(zip(students, student_steps)):
        last = k == len(students) - 1
        plan.append(
            Phase(
                "student" if len(students) == 1 else f"student_{k}",
                student.with_context(total_steps=steps),
                steps,
                "" if last else f"phase_{k}",
                uses_teacher=True,
                init_from_teacher=init_from_teacher,
                prepare_data=prepare_data if k == 0 else None,
            )
        )
    return plan
