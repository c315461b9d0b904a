"""Backbones: every one is an NNX module called as ``model(x_t, t, d, cond, *, train) -> velocity``."""

from __future__ import annotations

import math

import jax
from flax import nnx

from shortcutlib.nn.dit import (
    DIT_SIZES,
    DiT,
    DiTBlock,
    dit_config,
    flops_per_example,
    patchify,
    unpatchify,
)
from shortcutlib.nn.embeddings import (
    ConditionEmbedder,
    LabelEmbedder,
    ObservationEncoder,
    ScalarEmbedder,
    sinusoidal_embedding,
)
from shortcutlib.nn.mlp import ResidualMLP
from shortcutlib.nn.policy_transformer import ChunkTransformer


def count_params(module: nnx.Module) -> int:
    """Number of scalar parameters; works on abstract modules from ``nnx.eval_shape`` too."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


__all__ = [
    "DIT_SIZES",
    "ChunkTransformer",
    "ConditionEmbedder",
    "DiT",
    "DiTBlock",
    "LabelEmbedder",
    "ObservationEncoder",
    "ResidualMLP",
    "ScalarEmbedder",
    "count_params",
    "dit_config",
    "flops_per_example",
    "patchify",
    "sinusoidal_embedding",
    "unpatchify",
]
