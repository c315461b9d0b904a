"""Build a backbone from its config node (``model.name`` and its hyperparameters)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from shortcutlib.nn.prediction import with_prediction

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
BACKBONES = ("dit", "mlp", "chunk_transformer")


def resolve_dtype(name: str | None) -> Any:
    if name is None:
        return jnp.float32
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype '{name}'. Accepted: {', '.join(DTYPES)}.")
    return DTYPES[name]


def build_backbone(
    model_cfg: Any,
    *,
    data_shape: tuple[int, ...],
    num_classes: int = 0,
    obs_dim: int = 0,
    obs_horizon: int = 1,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """The velocity network: the backbone of ``model_cfg`` and what its output predicts.

    ``model.prediction``: ``velocity`` (default) or ``data`` (see ``shortcutlib.nn.prediction``).
    """
    backbone = _raw_backbone(model_cfg, data_shape, num_classes, obs_dim, obs_horizon, rngs)
    return with_prediction(backbone, str(model_cfg.get("prediction", "velocity")), float(model_cfg.get("min_remaining", 0.05)))


def _raw_backbone(
    model_cfg: Any, data_shape: tuple[int, ...], num_classes: int, obs_dim: int, obs_horizon: int, rngs: nnx.Rngs
) -> nnx.Module:
    name = model_cfg["name"]
    dtypes = {"dtype": resolve_dtype(model_cfg.get("dtype")), "param_dtype": jnp.float32}
    if name == "dit":
        from shortcutlib.nn.dit import DiT, dit_config

        if len(data_shape) != 3:
            raise ValueError(f"model=dit needs image-shaped data (H, W, C), got per-example shape {data_shape}; use model=mlp.")
        size = model_cfg.get("size")
        dims = dict(dit_config(size, model_cfg["patch"])) if size else {}
        for key in ("hidden", "depth", "num_heads", "patch_size"):
            if model_cfg.get(key) is not None:
                dims[key] = model_cfg[key]
        dims.setdefault("patch_size", model_cfg["patch"])
        return DiT(input_shape=tuple(data_shape), num_classes=num_classes, mlp_ratio=float(model_cfg.get("mlp_ratio", 4.0)), rngs=rngs, **dims, **dtypes)
    if name == "mlp":
        from shortcutlib.nn.mlp import ResidualMLP

        return ResidualMLP(
            data_shape=tuple(data_shape),
            hidden=int(model_cfg["hidden"]),
            depth=int(model_cfg["depth"]),
            num_classes=num_classes,
            obs_dim=obs_dim,
            obs_horizon=obs_horizon,
            mlp_ratio=float(model_cfg.get("mlp_ratio", 4.0)),
            rngs=rngs,
            **dtypes,
        )
    if name == "chunk_transformer":
        from shortcutlib.nn.policy_transformer import ChunkTransformer

        if len(data_shape) != 2:
            raise ValueError(f"model=chunk_transformer needs action chunks (H, A), got per-example shape {data_shape}.")
        return ChunkTransformer(
            horizon=data_shape[0],
            action_dim=data_shape[1],
            obs_dim=obs_dim,
            obs_horizon=obs_horizon,
            hidden=int(model_cfg["hidden"]),
            depth=int(model_cfg["depth"]),
            num_heads=int(model_cfg["num_heads"]),
            mlp_ratio=float(model_cfg.get("mlp_ratio", 4.0)),
            rngs=rngs,
            **dtypes,
        )
    raise ValueError(f"Unknown model '{name}'. Accepted: {', '.join(BACKBONES)}.")
