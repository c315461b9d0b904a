"""One training step as a pure function of (state, batch): targets, loss, AdamW, EMA."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shortcutlib.objectives.common import weighted_mse
from shortcutlib.train.state import TrainState, velocity_fn

StepFn = Callable[[TrainState, dict[str, Any]], tuple[TrainState, dict[str, jax.Array]]]


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def make_train_step(
    graphdef: nnx.GraphDef,
    objective: ModuleType,
    objective_cfg: Any,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float,
    teacher: Callable | None = None,
) -> StepFn:
    """Build ``step(state, batch) -> (state, metrics)``; jit it at the call site.

    Targets are computed outside the gradient (they are stop-gradient by construction),
    so the objective may call the live or EMA model freely.
    """

    def step(state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        rng, key = jax.random.split(state.rng)
        targets = objective.targets(
            key,
            batch,
            velocity_fn(graphdef, state.params),
            velocity_fn(graphdef, state.ema_params),
            objective_cfg,
            step=state.step,
            teacher=teacher,
        )
        targets = jax.lax.stop_gradient(targets)

        def loss_fn(params: Any) -> jax.Array:
            pred = velocity_fn(graphdef, params, train=True)(targets.x_t, targets.t, targets.d, targets.cond)
            return weighted_mse(pred, targets)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            ema_params=ema_update(state.ema_params, params, ema_decay),
            opt_state=opt_state,
            rng=rng,
        )
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        return new_state, metrics

    return step
