"""The train state: everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from shortcutlib.config import TrainConfig


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # nnx.State of the backbone's Params
    ema_params: Any
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key, so checkpoints store it as a plain array


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """AdamW (paper: lr 1e-4, weight decay 0.1) with optional warmup/cosine and global-norm clipping."""
    lr: Any = train.lr
    if train.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, train.lr, max(train.warmup_steps, 1), train.steps, end_value=0.0)
    elif train.warmup_steps > 0:
        lr = optax.linear_schedule(0.0, train.lr, train.warmup_steps)
    chain = []
    if train.grad_clip:
        chain.append(optax.clip_by_global_norm(train.grad_clip))
    chain.append(optax.adamw(lr, b1=train.beta1, b2=train.beta2, weight_decay=train.weight_decay))
    return optax.chain(*chain)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int) -> tuple[nnx.GraphDef, TrainState]:
    """Split the backbone into its graph and parameters and start EMA at the initial weights."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(seed),
    )
    return graphdef, state
