"""The train state: everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from omegaconf import DictConfig


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # nnx.State of the backbone's Params
    ema_params: Any
    opt_state: optax.OptState
    rng: jax.Array  # raw uint32 key, so checkpoints store it as a plain array


def make_optimizer(cfg: DictConfig | dict) -> optax.GradientTransformation:
    """AdamW (paper: lr 1e-4, weight decay 0.1) with optional warmup/cosine and global-norm clipping."""
    lr: Any = float(cfg["lr"])
    warmup = int(cfg.get("warmup_steps", 0) or 0)
    schedule = cfg.get("schedule", "constant")
    if schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), int(cfg["steps"]), end_value=0.0)
    elif schedule == "constant" and warmup > 0:
        lr = optax.linear_schedule(0.0, lr, warmup)
    elif schedule not in ("constant", "cosine"):
        raise ValueError(f"Unknown schedule '{schedule}'. Accepted: constant, cosine.")
    chain = []
    if cfg.get("grad_clip"):
        chain.append(optax.clip_by_global_norm(float(cfg["grad_clip"])))
    chain.append(
        optax.adamw(lr, b1=float(cfg.get("beta1", 0.9)), b2=float(cfg.get("beta2", 0.999)), weight_decay=float(cfg.get("weight_decay", 0.0)))
    )
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


def velocity_fn(graphdef: nnx.GraphDef, params: Any, *, train: bool = False):
    """Bind parameters to the backbone: ``(x_t, t, d, cond) -> velocity``."""

    def apply(x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any) -> jax.Array:
        return nnx.merge(graphdef, params)(x_t, t, d, cond, train=train)

    return apply
