"""An extra conditioning input for objectives that take the guidance scale as a condition.

Every backbone conditions through ``backbone.cond_embedder(t, d, cond)``, which returns the
vector added to its adaLN conditioning. ``add_guidance_input`` wraps that embedder so that a
``cond`` mapping may carry ``cond["guidance"]`` (B, k) scalars, embedded and added; the rest of
``cond`` (labels, observations) goes to the original embedder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.nn.embeddings import EMBED_INIT, sinusoidal_embedding

GUIDANCE_KEY = "guidance"


class GuidanceEmbedder(nnx.Module):
    """Each of ``num_inputs`` scalars in [0, 1] as a sinusoid (unscaled: smooth in the value),
    concatenated, then Linear -> SiLU -> Linear to the backbone's width."""

    def __init__(self, num_inputs: int, hidden: int, *, frequency_dim: int = 64, rngs: nnx.Rngs):
        self.frequency_dim = frequency_dim
        self.fc1 = nnx.Linear(num_inputs * frequency_dim, hidden, kernel_init=EMBED_INIT, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, hidden, kernel_init=EMBED_INIT, rngs=rngs)

    def __call__(self, values: jax.Array) -> jax.Array:
        values = jnp.asarray(values, jnp.float32)
        h = jnp.concatenate([sinusoidal_embedding(values[:, i], self.frequency_dim, scale=1.0) for i in range(values.shape[1])], -1)
        return self.fc2(nnx.silu(self.fc1(h)))


class GuidedConditionEmbedder(nnx.Module):
    def __init__(self, base: nnx.Module, num_inputs: int, hidden: int, rngs: nnx.Rngs):
        self.base = base
        self.guidance = GuidanceEmbedder(num_inputs, hidden, rngs=rngs)

    def __call__(self, t: jax.Array, d: jax.Array, cond: Any) -> jax.Array:
        if not isinstance(cond, Mapping) or GUIDANCE_KEY not in cond:
            raise ValueError(f"this model takes the guidance as an input: pass cond={{'label': ..., '{GUIDANCE_KEY}': ...}}")
        rest = {k: v for k, v in cond.items() if k != GUIDANCE_KEY}
        inner = rest.get("label") if set(rest) == {"label"} else (rest or None)
        return self.base(t, d, inner) + self.guidance(cond[GUIDANCE_KEY]).astype(jnp.float32)


def _conditioned(module: nnx.Module) -> nnx.Module:
    """The module that owns ``cond_embedder`` (looking through prediction wrappers)."""
    while not hasattr(module, "cond_embedder"):
        if not hasattr(module, "backbone"):
            raise ValueError(f"{type(module).__name__} has no cond_embedder to add a guidance input to.")
        module = module.backbone
    return module


def add_guidance_input(backbone: nnx.Module, rngs: nnx.Rngs, num_inputs: int = 3) -> nnx.Module:
    owner = _conditioned(backbone)
    hidden = owner.cond_embedder.t_embedder.fc2.out_features
    owner.cond_embedder = GuidedConditionEmbedder(owner.cond_embedder, num_inputs, hidden, rngs)
    return backbone
