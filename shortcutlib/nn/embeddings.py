"""Embeddings shared by every backbone: time t, step size d, class labels, observations.

The conditioning vector of a backbone is ``c = t_emb(t) + d_emb(d) (+ label or observation
embedding)``. ``d`` is embedded exactly like ``t``: a continuous scalar in [0, 1], so a model
can be queried at step sizes it was never trained on and ``d = 0`` (the instantaneous
velocity) is an ordinary input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Dtype = Any

# DiT's initialisation for the timestep MLP and the label table.
EMBED_INIT = nnx.initializers.normal(stddev=0.02)
FREQUENCY_DIM = 256


def sinusoidal_embedding(x: jax.Array, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> jax.Array:
    """DiT's frequency embedding of a continuous scalar per example.

    ``x`` has shape (B,) and lies in [0, 1]; it is multiplied by ``scale`` first so that the
    unit interval spans the same range of phases as DiT's integer timesteps 0..999.
    Returns float32 (B, dim): [cos(x f_k), sin(x f_k)] with geometric frequencies f_k.
    """
    x = jnp.asarray(x, jnp.float32) * scale
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE/DiT 1D sin-cos table for integer positions ``pos`` -> (len(pos), dim)."""
    if dim % 2:
        raise ValueError(f"sin-cos positional embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


@functools.lru_cache(maxsize=32)
def sincos_pos_embed_1d(dim: int, length: int) -> np.ndarray:
    """Fixed 1D sin-cos positional embedding (length, dim), float32 numpy (a constant, not a Param)."""
    return _sincos_1d(dim, np.arange(length)).astype(np.float32)


@functools.lru_cache(maxsize=32)
def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """DiT's fixed 2D sin-cos positional embedding (grid_h * grid_w, dim), row-major tokens.

    Half of the channels encode the row, half the column. Computed with numpy and cached so
    it enters the traced graph as a constant and never appears in the module state.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos positional embedding needs a dimension divisible by 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    emb_w = _sincos_1d(dim // 2, cols)
    emb_h = _sincos_1d(dim // 2, rows)
    return np.concatenate([emb_w, emb_h], axis=1).astype(np.float32)


class ScalarEmbedder(nnx.Module):
    """sinusoidal -> Linear -> SiLU -> Linear, as DiT's TimestepEmbedder (used for t and for d)."""

    def __init__(
        self,
        hidden: int,
        *,
        frequency_dim: int = FREQUENCY_DIM,
        scale: float = 1000.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.frequency_dim = frequency_dim
        self.scale = scale
        kw = dict(kernel_init=EMBED_INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(frequency_dim, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, hidden, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = sinusoidal_embedding(x, self.frequency_dim, scale=self.scale)
        return self.fc2(nnx.silu(self.fc1(h)))


def set_embedding_scales(backbone: nnx.Module, scale: float) -> nnx.Module:
    """Set the sinusoid scale of the t and d embeddings of every ``ConditionEmbedder`` in ``backbone``
    (a training choice of some objectives, see ``objectives.meanflow``); the weights are unchanged."""
    found = False
    for _, module in nnx.iter_graph(backbone):
        if isinstance(module, ConditionEmbedder):
            module.t_embedder.scale = module.d_embedder.scale = float(scale)
            found = True
    if not found:
        raise ValueError(f"{type(backbone).__name__} has no ConditionEmbedder whose embedding scales could be set.")
    return backbone


class LabelEmbedder(nnx.Module):
    """Class-label table with ``num_classes + 1`` rows; row ``num_classes`` is the null token (CFG).

    Label dropout is the objective's job (it writes ``num_classes`` into the labels).
    """

    def __init__(
        self,
        num_classes: int,
        hidden: int,
        *,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_classes <= 0:
            raise ValueError("LabelEmbedder needs num_classes >= 1; use no embedder for unconditional models")
        self.num_classes = num_classes
        self.table = nnx.Embed(
            num_classes + 1, hidden, embedding_init=EMBED_INIT, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, labels: jax.Array) -> jax.Array:
        return self.table(labels.astype(jnp.int32))


class ObservationEncoder(nnx.Module):
    """MLP from an observation (B, obs_dim) or a history (B, T_obs, obs_dim), flattened, to ``hidden``."""

    def __init__(
        self,
        obs_dim: int,
        hidden: int,
        *,
        obs_horizon: int = 1,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = obs_dim * obs_horizon
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(self.in_features, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, hidden, **kw)

    def __call__(self, obs: jax.Array) -> jax.Array:
        flat = obs.reshape(obs.shape[0], -1)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"observation of shape {obs.shape} has {flat.shape[1]} features per example; the encoder was "
                f"built for obs_dim * obs_horizon = {self.in_features}: set obs_dim/obs_horizon to match the data"
            )
        return self.fc2(nnx.silu(self.fc1(flat)))


def split_cond(cond: Any) -> tuple[jax.Array | None, jax.Array | None]:
    """Read ``cond`` as (labels, observations).

    Accepts None, a bare array (integer dtype -> class labels, float -> observations) or a
    mapping with optional keys ``"label"`` and ``"obs"``.
    """
    if cond is None:
        return None, None
    if isinstance(cond, Mapping):
        unknown = set(cond) - {"label", "obs"}
        if unknown:
            raise ValueError(f"cond mapping may only hold 'label' and 'obs', got extra keys {sorted(unknown)}")
        return cond.get("label"), cond.get("obs")
    cond = jnp.asarray(cond)
    if jnp.issubdtype(cond.dtype, jnp.integer):
        return cond, None
    return None, cond


class ConditionEmbedder(nnx.Module):
    """The conditioning vector ``c = t_emb(t) + d_emb(d) (+ label or observation embedding)``.

    ``num_classes = 0`` and ``obs_dim = 0`` give an unconditional model that ignores ``cond``.
    """

    def __init__(
        self,
        hidden: int,
        *,
        num_classes: int = 0,
        obs_dim: int = 0,
        obs_horizon: int = 1,
        time_scale: float = 1000.0,
        step_scale: float = 1000.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.t_embedder = ScalarEmbedder(hidden, scale=time_scale, **kw)
        self.d_embedder = ScalarEmbedder(hidden, scale=step_scale, **kw)
        self.label_embedder = LabelEmbedder(num_classes, hidden, **kw) if num_classes > 0 else None
        self.obs_encoder = ObservationEncoder(obs_dim, hidden, obs_horizon=obs_horizon, **kw) if obs_dim > 0 else None

    def __call__(self, t: jax.Array, d: jax.Array, cond: Any) -> jax.Array:
        c = self.t_embedder(t) + self.d_embedder(d)
        labels, obs = split_cond(cond)
        if self.label_embedder is not None:
            if labels is None:
                raise ValueError(
                    "this model is class-conditional: pass integer labels of shape (B,) as cond "
                    f"(use {self.label_embedder.num_classes}, the null token, for unconditional samples)"
                )
            c = c + self.label_embedder(labels)
        if self.obs_encoder is not None:
            if obs is None:
                raise ValueError("this model is observation-conditional: pass a float observation array as cond")
            c = c + self.obs_encoder(obs)
        return c
