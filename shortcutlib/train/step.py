"""One training step as a pure function of (state, batch): targets, loss, AdamW, EMA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from shortcutlib.objectives.base import Objective
from shortcutlib.train.state import TrainState
from shortcutlib.velocity import bind

StepFn = Callable[..., tuple[TrainState, dict[str, jax.Array]]]


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def all_finite(*trees: Any) -> jax.Array:
    """One boolean: every element of every array is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for tree in trees for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_train_step(
    graphdef: nnx.GraphDef,
    objective: Objective,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float,
    teacher_graphdef: nnx.GraphDef | None = None,
    skip_nonfinite: bool = False,
) -> StepFn:
    """Build ``step(state, batch, teacher_params=None) -> (state, metrics)``; jit it at the call site.

    Targets are computed outside the gradient (they are stop-gradient by construction),
    so the objective may call the live or EMA model freely; the loss is the objective's
    (by default the weighted MSE of the model's prediction to the targets). Distillation objectives get a
    frozen teacher the same way, from ``teacher_params`` (an argument, not a constant baked
    into the compiled step) and ``teacher_graphdef`` (default: the student's architecture).

    ``metrics["finite"]`` is 1 when the loss and every gradient are finite. With
    ``skip_nonfinite`` a step where they are not leaves params, EMA and optimizer state
    untouched (the step counter and RNG still advance, so the data stream stays aligned).
    """

    def step(state: TrainState, batch: dict[str, Any], teacher_params: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
        rng, key = jax.random.split(state.rng)
        teacher = None if teacher_params is None else bind(teacher_graphdef or graphdef, teacher_params)
        targets = objective.targets(
            key, batch, bind(graphdef, state.params), bind(graphdef, state.ema_params), step=state.step, teacher=teacher
        )
        targets = jax.lax.stop_gradient(targets)

        def loss_fn(params: Any) -> jax.Array:
            return objective.loss(bind(graphdef, params, train=True), targets)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = ema_update(state.ema_params, params, ema_decay)
        finite = all_finite(loss, grads)
        if skip_nonfinite:
            params, ema_params, opt_state = select_tree(
                finite, (params, ema_params, opt_state), (state.params, state.ema_params, state.opt_state)
            )
        new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state, rng=rng)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "finite": finite.astype(jnp.float32)}
        return new_state, metrics

    return step
