"""DiT with adaLN-Zero (Peebles & Xie, 2023) for channels-last images (B, H, W, C).

Differences from the reference: no learned sigma (the output is a velocity with as many
channels as the input), an extra embedder for the step size d, and the 2D sin-cos positional
embedding is a constant rather than a (frozen) parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from shortcutlib.config import require
from shortcutlib.nn.embeddings import (
    FREQUENCY_DIM,
    ConditionEmbedder,
    Dtype,
    sincos_pos_embed_2d,
)
from shortcutlib.nn.factory import BackboneConfig, DataSpec

# size -> (depth, hidden, heads), Table 1 of the DiT paper.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

XAVIER = nnx.initializers.xavier_uniform()
ZEROS = nnx.initializers.zeros_init()


def dit_config(size: str, patch: int) -> dict[str, int]:
    """Constructor arguments of a paper-sized DiT, e.g. ``DiT(input_shape, **dit_config("B", 2), ...)``."""
    if size not in DIT_SIZES:
        raise ValueError(f"unknown DiT size {size!r}; choose one of {sorted(DIT_SIZES)}")
    depth, hidden, heads = DIT_SIZES[size]
    return {"patch_size": patch, "hidden": hidden, "depth": depth, "num_heads": heads}


def patchify(x: jax.Array, p: int) -> jax.Array:
    """(B, H, W, C) -> (B, (H/p)(W/p), p*p*C), tokens in row-major order."""
    b, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, image_shape: tuple[int, int, int]) -> jax.Array:
    """Inverse of :func:`patchify`: (B, N, p*p*C) -> (B, H, W, C)."""
    h, w, c = image_shape
    b = x.shape[0]
    x = x.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: per-example shift/scale of (B, ..., D) features by (B, D) vectors."""
    expand = (slice(None),) + (None,) * (x.ndim - 2)
    return x * (1 + scale[expand]) + shift[expand]


def adaln_norm(hidden: int, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm without affine parameters: adaLN supplies the scale and shift."""
    return nnx.LayerNorm(
        hidden, epsilon=1e-6, use_bias=False, use_scale=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )


class AdaLNModulation(nnx.Module):
    """SiLU -> zero-initialised Linear producing ``n`` modulation vectors from the conditioning c."""

    def __init__(self, hidden: int, n: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        self.n = n
        self.linear = nnx.Linear(
            hidden, n * hidden, kernel_init=ZEROS, bias_init=ZEROS, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, c: jax.Array) -> list[jax.Array]:
        return jnp.split(self.linear(nnx.silu(c)), self.n, axis=-1)


class Attention(nnx.Module):
    """Multi-head self-attention, softmax(Q K^T / sqrt(head_dim)) V, over (B, N, D) tokens."""

    def __init__(self, hidden: int, num_heads: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        if hidden % num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        kw = dict(kernel_init=XAVIER, bias_init=ZEROS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(hidden, 3 * hidden, **kw)
        self.proj = nnx.Linear(hidden, hidden, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, dim = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, N, heads, head_dim)
        out = jax.nn.dot_product_attention(q, k, v)  # default scale is 1/sqrt(head_dim)
        return self.proj(out.reshape(b, n, dim))


class DiTBlock(nnx.Module):
    """Transformer block with adaLN-Zero: shift/scale/gate for attention and MLP, gates start at zero."""

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        lin = dict(kernel_init=XAVIER, bias_init=ZEROS, **kw)
        mlp_hidden = int(hidden * mlp_ratio)
        self.norm1 = adaln_norm(hidden, **kw)
        self.attn = Attention(hidden, num_heads, **kw)
        self.norm2 = adaln_norm(hidden, **kw)
        self.fc1 = nnx.Linear(hidden, mlp_hidden, **lin)
        self.fc2 = nnx.Linear(mlp_hidden, hidden, **lin)
        self.adaln = AdaLNModulation(hidden, 6, **kw)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaln(c)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        h = self.fc2(nnx.gelu(self.fc1(h), approximate=True))
        return x + gate_mlp[:, None] * h


class FinalLayer(nnx.Module):
    """adaLN (shift, scale) then a zero-initialised Linear: every backbone starts by predicting 0."""

    def __init__(self, hidden: int, out_features: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = adaln_norm(hidden, **kw)
        self.adaln = AdaLNModulation(hidden, 2, **kw)
        self.linear = nnx.Linear(hidden, out_features, kernel_init=ZEROS, bias_init=ZEROS, **kw)

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = self.adaln(c)
        return self.linear(modulate(self.norm(x), shift, scale))


@dataclass
class DiTConfig(BackboneConfig):
    size: Optional[str] = None  # S | B | L | XL: the paper's sizes; hidden/depth/num_heads below override
    patch: int = 2
    hidden: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.size is None or self.size in DIT_SIZES, "size", self.size, f"accepted: {', '.join(DIT_SIZES)}.")
        require(self.size is not None or None not in (self.hidden, self.depth, self.num_heads), "size", self.size,
                "give a size or all of hidden, depth and num_heads.")

    def dims(self) -> dict[str, int]:
        dims = dit_config(self.size, self.patch) if self.size else {"patch_size": self.patch}
        for key in ("hidden", "depth", "num_heads"):
            if getattr(self, key) is not None:
                dims[key] = getattr(self, key)
        return dims


class DiT(nnx.Module):
    """Diffusion transformer over image patches, conditioned on t, d and an optional class label.

    ``cond`` is integer labels (B,) with ``num_classes`` as the null token, or None when
    ``num_classes = 0``.
    """

    Config = DiTConfig

    @classmethod
    def from_config(cls, config: DiTConfig, spec: DataSpec, rngs: nnx.Rngs) -> DiT:
        if len(spec.data_shape) != 3:
            raise ValueError(f"model=dit needs image-shaped data (H, W, C), got per-example shape {spec.data_shape}; use model=mlp.")
        return cls(
            input_shape=spec.data_shape,
            num_classes=spec.num_classes,
            mlp_ratio=config.mlp_ratio,
            rngs=rngs,
            **config.common_kwargs(),
            **config.dims(),
        )

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        patch_size: int,
        hidden: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        *,
        time_scale: float = 1000.0,
        step_scale: float = 1000.0,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        h, w, c = input_shape
        if h % patch_size or w % patch_size:
            raise ValueError(f"input {h}x{w} is not divisible by patch_size {patch_size}")
        self.input_shape = (h, w, c)
        self.patch_size = patch_size
        self.hidden = hidden
        self.dtype = dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        patch_dim = patch_size * patch_size * c
        # A Linear on flattened patches is the strided conv of the reference implementation.
        self.x_embedder = nnx.Linear(patch_dim, hidden, kernel_init=XAVIER, bias_init=ZEROS, **kw)
        self.cond_embedder = ConditionEmbedder(hidden, num_classes=num_classes, time_scale=time_scale, step_scale=step_scale, **kw)
        self.blocks = nnx.List([DiTBlock(hidden, num_heads, mlp_ratio, **kw) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden, patch_dim, **kw)

    def __call__(self, x_t: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None, *, train: bool = False) -> jax.Array:
        h, w, _ = self.input_shape
        p = self.patch_size
        pos = sincos_pos_embed_2d(self.hidden, h // p, w // p)
        x = self.x_embedder(patchify(x_t.astype(self.dtype), p)) + jnp.asarray(pos, self.dtype)
        c = self.cond_embedder(t, d, cond)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return unpatchify(x, p, self.input_shape).astype(jnp.float32)


def flops_per_example(
    input_shape: tuple[int, int, int],
    patch_size: int,
    hidden: int,
    depth: int,
    mlp_ratio: float = 4.0,
) -> int:
    """Forward matmul FLOPs of one example (2 per multiply-add), for MFU.

    Counts the patch embedding, t and d embedders, every block (qkv, attention scores and
    values, output projection, MLP, adaLN) and the final layer; norms, softmax and
    elementwise ops are left out. Half of it is what the DiT paper reports as "Gflops".
    """
    h, w, c = input_shape
    n = (h // patch_size) * (w // patch_size)
    patch_dim = patch_size * patch_size * c
    mlp_hidden = int(hidden * mlp_ratio)
    embed = n * patch_dim * hidden + 2 * (FREQUENCY_DIM * hidden + hidden * hidden)
    block = (
        n * hidden * 3 * hidden  # qkv
        + 2 * n * n * hidden  # Q K^T and attention-weighted V
        + n * hidden * hidden  # output projection
        + 2 * n * hidden * mlp_hidden  # MLP
        + hidden * 6 * hidden  # adaLN modulation (once per example)
    )
    final = hidden * 2 * hidden + n * hidden * patch_dim
    return 2 * (embed + depth * block + final)
