"""Transformer over an action chunk, conditioned on an observation history.

Tokens: one per observation in the history (B, T_obs, obs_dim), then one per action step of
the chunk (B, H, A); a fixed 1D sin-cos embedding marks positions in that sequence. The
conditioning vector (t and d embeddings) modulates every block through adaLN-Zero, and only
the action tokens are projected back to actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.nn.dit import DiTBlock, FinalLayer
from shortcutlib.nn.embeddings import (
    ConditionEmbedder,
    Dtype,
    sincos_pos_embed_1d,
    split_cond,
)
from shortcutlib.nn.factory import BackboneConfig, DataSpec


@dataclass
class ChunkTransformerConfig(BackboneConfig):
    hidden: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0


class ChunkTransformer(nnx.Module):
    """Velocity of an action chunk (B, horizon, action_dim) given observations as ``cond``.

    ``cond`` is (B, obs_horizon, obs_dim), or (B, obs_dim) when ``obs_horizon = 1``, or a
    mapping with key ``"obs"``; ``obs_dim = 0`` builds an unconditional model that ignores it.
    """

    Config = ChunkTransformerConfig

    @classmethod
    def from_config(cls, config: ChunkTransformerConfig, spec: DataSpec, rngs: nnx.Rngs) -> ChunkTransformer:
        if len(spec.data_shape) != 2:
            raise ValueError(f"model=chunk_transformer needs action chunks (H, A), got per-example shape {spec.data_shape}.")
        return cls(
            horizon=spec.data_shape[0],
            action_dim=spec.data_shape[1],
            obs_dim=spec.obs_dim,
            obs_horizon=spec.obs_horizon,
            hidden=config.hidden,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            rngs=rngs,
            **config.common_kwargs(),
        )

    def __init__(
        self,
        horizon: int,
        action_dim: int,
        obs_dim: int,
        obs_horizon: int,
        hidden: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        time_scale: float = 1000.0,
        step_scale: float = 1000.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.horizon = horizon
        self.action_dim = action_dim
        self.obs_dim = obs_dim
        self.obs_horizon = obs_horizon if obs_dim > 0 else 0
        self.hidden = hidden
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.action_proj = nnx.Linear(action_dim, hidden, **kw)
        self.obs_proj = nnx.Linear(obs_dim, hidden, **kw) if obs_dim > 0 else None
        self.cond_embedder = ConditionEmbedder(hidden, time_scale=time_scale, step_scale=step_scale, **kw)  # t and d only: observations are tokens
        self.blocks = nnx.List([DiTBlock(hidden, num_heads, mlp_ratio, **kw) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden, action_dim, **kw)

    def _obs_tokens(self, cond: Any, batch: int) -> jax.Array:
        _, obs = split_cond(cond)
        if obs is None:
            raise ValueError("ChunkTransformer was built with obs_dim > 0: pass observations as cond")
        expected = batch * self.obs_horizon * self.obs_dim
        if obs.size != expected or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"observations of shape {obs.shape} do not match (B={batch}, obs_horizon={self.obs_horizon}, "
                f"obs_dim={self.obs_dim}): set obs_horizon/obs_dim to match the data"
            )
        return self.obs_proj(obs.reshape(batch, self.obs_horizon, self.obs_dim).astype(self.dtype))

    def __call__(self, x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None, *, train: bool = False) -> jax.Array:
        b = x_t.shape[0]
        if x_t.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(f"expected an action chunk (B, {self.horizon}, {self.action_dim}), got {x_t.shape}")
        tokens = self.action_proj(x_t.astype(self.dtype))
        if self.obs_proj is not None:
            tokens = jnp.concatenate([self._obs_tokens(cond, b), tokens], axis=1)
        pos = sincos_pos_embed_1d(self.hidden, self.obs_horizon + self.horizon)
        x = tokens + jnp.asarray(pos, self.dtype)
        c = self.cond_embedder(t, d, None)
        for block in self.blocks:
            x = block(x, c)
        return self.final_layer(x[:, self.obs_horizon :], c).astype(jnp.float32)
