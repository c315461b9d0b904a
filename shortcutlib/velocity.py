"""The model as a velocity function, the vocabulary objectives, the sampler and inference share.

A backbone is called as ``model(x_t, t, d, cond) -> velocity``: the velocity at ``x_t`` and
time ``t`` for a step of size ``d`` (``d = 0``: the instantaneous velocity). ``bind`` turns a
graph and parameters into such a function; ``guided_velocity`` applies classifier-free
guidance to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# model(x_t, t, d, cond) -> velocity, with parameters already bound.
VelocityFn = Callable[[jax.Array, jax.Array, jax.Array, Any], jax.Array]


def bind(graphdef: nnx.GraphDef, params: Any, *, train: bool = False) -> VelocityFn:
    """Bind parameters to the backbone: ``(x_t, t, d, cond) -> velocity``."""

    def apply(x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any) -> jax.Array:
        return nnx.merge(graphdef, params)(x_t, t, d, cond, train=train)

    return apply


def null_cond(cond: Any, num_classes: int) -> Any:
    """The unconditional counterpart of ``cond``: every class label set to the null token."""
    return jax.tree.map(
        lambda leaf: jnp.full_like(leaf, num_classes) if jnp.issubdtype(leaf.dtype, jnp.integer) else leaf, cond
    )


def guided_velocity(model: VelocityFn, x: jax.Array, t: jax.Array, d: jax.Array, cond: Any, scale: float, num_classes: int) -> jax.Array:
    """Classifier-free guidance ``v_u + scale (v_c - v_u)``; scale 1 is the plain conditional model.

    Conditional and unconditional passes share one batched call.
    """
    if scale == 1.0 or num_classes <= 0 or cond is None:
        return model(x, t, d, cond)
    both = model(
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]),
        jnp.concatenate([d, d]),
        jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, null_cond(cond, num_classes)),
    )
    v_cond, v_uncond = jnp.split(both, 2)
    return v_uncond + scale * (v_cond - v_uncond)
