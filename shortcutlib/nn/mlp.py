"""Residual MLP for vector data (B, D) and action chunks (B, H, A).

Each residual block is LayerNorm -> adaLN shift/scale -> Linear -> SiLU -> Linear, added back
through a gate; the modulation is zero-initialised so every block starts as the identity, and
the zero-initialised output layer makes the untrained model predict 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.nn.dit import AdaLNModulation, FinalLayer, adaln_norm, modulate
from shortcutlib.nn.embeddings import ConditionEmbedder, Dtype
from shortcutlib.nn.factory import BackboneConfig, DataSpec


class ResidualBlock(nnx.Module):
    """x + gate(c) * MLP(modulate(LayerNorm(x), shift(c), scale(c)))."""

    def __init__(self, hidden: int, mlp_ratio: float, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        inner = int(hidden * mlp_ratio)
        self.norm = adaln_norm(hidden, **kw)
        self.fc1 = nnx.Linear(hidden, inner, **kw)
        self.fc2 = nnx.Linear(inner, hidden, **kw)
        self.adaln = AdaLNModulation(hidden, 3, **kw)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale, gate = self.adaln(c)
        h = self.fc2(nnx.silu(self.fc1(modulate(self.norm(x), shift, scale))))
        return x + gate * h


@dataclass
class ResidualMLPConfig(BackboneConfig):
    hidden: int = 256
    depth: int = 4
    mlp_ratio: float = 2.0


class ResidualMLP(nnx.Module):
    """Velocity network for per-example data of shape ``data_shape`` (flattened internally).

    ``cond``: None (unconditional), integer labels (B,) when ``num_classes > 0`` (label
    ``num_classes`` is the null token), or observations (B, obs_dim) / (B, obs_horizon, obs_dim)
    when ``obs_dim > 0``.
    """

    Config = ResidualMLPConfig

    @classmethod
    def from_config(cls, config: ResidualMLPConfig, spec: DataSpec, rngs: nnx.Rngs) -> ResidualMLP:
        return cls(
            data_shape=spec.data_shape,
            hidden=config.hidden,
            depth=config.depth,
            num_classes=spec.num_classes,
            obs_dim=spec.obs_dim,
            obs_horizon=spec.obs_horizon,
            mlp_ratio=config.mlp_ratio,
            rngs=rngs,
            **config.common_kwargs(),
        )

    def __init__(
        self,
        data_shape: tuple[int, ...],
        hidden: int,
        depth: int,
        num_classes: int = 0,
        obs_dim: int = 0,
        obs_horizon: int = 1,
        mlp_ratio: float = 4.0,
        *,
        time_scale: float = 1000.0,
        step_scale: float = 1000.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.data_shape = tuple(int(s) for s in data_shape)
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        features = math.prod(self.data_shape)
        self.in_proj = nnx.Linear(features, hidden, **kw)
        self.cond_embedder = ConditionEmbedder(
            hidden, num_classes=num_classes, obs_dim=obs_dim, obs_horizon=obs_horizon, time_scale=time_scale, step_scale=step_scale, **kw
        )
        self.blocks = nnx.List([ResidualBlock(hidden, mlp_ratio, **kw) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden, features, **kw)

    def __call__(self, x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None, *, train: bool = False) -> jax.Array:
        if tuple(x_t.shape[1:]) != self.data_shape:
            raise ValueError(f"expected x_t of shape (B, *{self.data_shape}), got {x_t.shape}")
        b = x_t.shape[0]
        c = self.cond_embedder(t, d, cond)
        # The conditioning also enters the residual stream: with adaLN-Zero alone, an input of
        # zeros (one-step regression from x_t = 0) would leave every weight without gradient.
        x = self.in_proj(x_t.reshape(b, -1).astype(self.dtype)) + c
        for block in self.blocks:
            x = block(x, c)
        return self.final_layer(x, c).reshape(x_t.shape).astype(jnp.float32)
