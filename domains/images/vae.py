"""The KL autoencoder of Stable Diffusion (``stabilityai/sd-vae-ft-mse``) in Flax NNX.

A port of diffusers' ``AutoencoderKL`` (Encoder of DownEncoderBlock2D blocks, a mid block
with one self-attention, quant/post-quant 1x1 convs, Decoder of UpDecoderBlock2D blocks),
channels-last: images are ``(B, H, W, C)`` in ``[-1, 1]``. Submodule and attribute names
mirror diffusers' so that a parameter path such as
``encoder.down_blocks.0.resnets.1.norm1.scale`` maps one to one onto the diffusers key
``encoder.down_blocks.0.resnets.1.norm1.weight`` (see ``vae_weights.py``).

``VAECodec`` wraps a loaded autoencoder as the image domain's codec: data space is images,
model space is latents scaled by ``scaling_factor``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

DOWN_BLOCK = "DownEncoderBlock2D"
UP_BLOCK = "UpDecoderBlock2D"
NORM_EPS = 1e-6  # diffusers hard-codes eps=1e-6 for every GroupNorm of this VAE
LOGVAR_RANGE = (-30.0, 20.0)  # the clamp of diffusers' DiagonalGaussianDistribution


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The fields of a diffusers ``AutoencoderKL`` ``config.json``."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (DOWN_BLOCK,)
    up_block_types: tuple[str, ...] = (UP_BLOCK,)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        # JSON gives lists; keep the config hashable so it can be a static jit argument.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        n = len(self.block_out_channels)
        if n == 0:
            raise ValueError("block_out_channels must name at least one block.")
        if self.down_block_types != (DOWN_BLOCK,) * n or self.up_block_types != (UP_BLOCK,) * n:
            raise ValueError(
                f"Only {n} x {DOWN_BLOCK!r} down blocks and {n} x {UP_BLOCK!r} up blocks are supported "
                f"(one per entry of block_out_channels); got down_block_types={self.down_block_types}, "
                f"up_block_types={self.up_block_types}."
            )
        if self.act_fn != "silu":
            raise ValueError(f"Only act_fn='silu' is supported, got {self.act_fn!r}.")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}.")

    @property
    def downsample_factor(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> VAEConfig:
        """Builds a config from a diffusers config dict; private (``_``) and unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in names and not k.startswith("_"))
        if unknown:
            warnings.warn(f"Ignoring AutoencoderKL config keys this port does not use: {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> VAEConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def sd_vae_ft_mse(cls) -> VAEConfig:
        """The architecture of ``stabilityai/sd-vae-ft-mse`` (83.7M parameters, 8x downsampling)."""
        return cls(
            down_block_types=(DOWN_BLOCK,) * 4,
            up_block_types=(UP_BLOCK,) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            sample_size=256,
        )


# ----------------------------------------------------------------------------- layers


@dataclasses.dataclass(frozen=True)
class _Ctx:
    """What every layer constructor needs besides its shape."""

    groups: int
    dtype: Any
    rngs: nnx.Rngs

    def norm(self, channels: int) -> nnx.GroupNorm:
        # Two-pass variance, as torch computes it, so parity holds for large activations.
        return nnx.GroupNorm(
            channels, num_groups=self.groups, epsilon=NORM_EPS, use_fast_variance=False,
            dtype=self.dtype, param_dtype=self.dtype, rngs=self.rngs,
        )

    def conv(self, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: Any = None) -> nnx.Conv:
        pad = kernel // 2
        return nnx.Conv(
            cin, cout, (kernel, kernel), strides=stride,
            padding=((pad, pad), (pad, pad)) if padding is None else padding,
            dtype=self.dtype, param_dtype=self.dtype, rngs=self.rngs,
        )

    def linear(self, cin: int, cout: int) -> nnx.Linear:
        return nnx.Linear(cin, cout, dtype=self.dtype, param_dtype=self.dtype, rngs=self.rngs)


class ResnetBlock2D(nnx.Module):
    """GroupNorm-SiLU-conv twice, plus a 1x1 shortcut conv when the width changes."""

    def __init__(self, cin: int, cout: int, ctx: _Ctx):
        self.norm1 = ctx.norm(cin)
        self.conv1 = ctx.conv(cin, cout, 3)
        self.norm2 = ctx.norm(cout)
        self.conv2 = ctx.conv(cout, cout, 3)
        self.conv_shortcut = ctx.conv(cin, cout, 1) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nnx.Module):
    """Single-head self-attention over all pixels, with a residual (diffusers sets heads = 1 here)."""

    def __init__(self, channels: int, ctx: _Ctx):
        self.group_norm = ctx.norm(channels)
        self.to_q = ctx.linear(channels, channels)
        self.to_k = ctx.linear(channels, channels)
        self.to_v = ctx.linear(channels, channels)
        self.to_out = nnx.List([ctx.linear(channels, channels)])  # a list so the path reads to_out.0

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = self.group_norm(x).reshape(b, h * w, c)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        # Softmax in float32 whatever the compute dtype (diffusers' upcast_softmax=True).
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(c)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        y = self.to_out[0](jnp.einsum("bqk,bkc->bqc", probs, v))
        return x + y.reshape(b, h, w, c)


class Downsample2D(nnx.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (diffusers padding=0)."""

    def __init__(self, channels: int, ctx: _Ctx):
        self.conv = ctx.conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    def __init__(self, channels: int, ctx: _Ctx):
        self.conv = ctx.conv(channels, channels, 3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class ResnetStack(nnx.Module):
    """``num_layers`` resnets then an optional resampler: DownEncoderBlock2D / UpDecoderBlock2D.

    The resampler lives in a one-element list named like diffusers' (``downsamplers`` or
    ``upsamplers``) so parameter paths match its keys.
    """

    def __init__(self, cin: int, cout: int, num_layers: int, resample: str | None, ctx: _Ctx):
        self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, ctx) for i in range(num_layers)])
        self.downsamplers = nnx.List([Downsample2D(cout, ctx)] if resample == "down" else [])
        self.upsamplers = nnx.List([Upsample2D(cout, ctx)] if resample == "up" else [])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in [*self.resnets, *self.downsamplers, *self.upsamplers]:
            x = layer(x)
        return x


class UNetMidBlock2D(nnx.Module):
    """resnet, attention, resnet."""

    def __init__(self, channels: int, add_attention: bool, ctx: _Ctx):
        self.attentions = nnx.List([Attention(channels, ctx)] if add_attention else [])
        self.resnets = nnx.List([ResnetBlock2D(channels, channels, ctx) for _ in range(2)])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        for attn in self.attentions:
            x = attn(x)
        return self.resnets[1](x)


class Encoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, ctx: _Ctx):
        chans = cfg.block_out_channels
        self.conv_in = ctx.conv(cfg.in_channels, chans[0], 3)
        self.down_blocks = nnx.List([
            ResnetStack(chans[max(i - 1, 0)], c, cfg.layers_per_block, None if i == len(chans) - 1 else "down", ctx)
            for i, c in enumerate(chans)
        ])
        self.mid_block = UNetMidBlock2D(chans[-1], cfg.mid_block_add_attention, ctx)
        self.conv_norm_out = ctx.norm(chans[-1])
        self.conv_out = ctx.conv(chans[-1], 2 * cfg.latent_channels, 3)  # mean and logvar

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    def __init__(self, cfg: VAEConfig, ctx: _Ctx):
        chans = cfg.block_out_channels[::-1]
        self.conv_in = ctx.conv(cfg.latent_channels, chans[0], 3)
        self.mid_block = UNetMidBlock2D(chans[0], cfg.mid_block_add_attention, ctx)
        self.up_blocks = nnx.List([
            ResnetStack(chans[max(i - 1, 0)], c, cfg.layers_per_block + 1, None if i == len(chans) - 1 else "up", ctx)
            for i, c in enumerate(chans)
        ])
        self.conv_norm_out = ctx.norm(chans[-1])
        self.conv_out = ctx.conv(chans[-1], cfg.out_channels, 3)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """diffusers' ``AutoencoderKL``, channels-last. Holds only ``nnx.Param`` state."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs, dtype: Any = jnp.float32):
        self.config = config
        ctx = _Ctx(config.norm_num_groups, dtype, rngs)
        lat = config.latent_channels
        self.encoder = Encoder(config, ctx)
        self.decoder = Decoder(config, ctx)
        self.quant_conv = ctx.conv(2 * lat, 2 * lat, 1) if config.use_quant_conv else None
        self.post_quant_conv = ctx.conv(lat, lat, 1) if config.use_post_quant_conv else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images ``(B, H, W, in_channels)`` in [-1, 1] -> (mean, logvar) of the unscaled latent."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents ``(B, h, w, latent_channels)`` -> images, not clipped."""
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


def load_vae(path: str | Path, dtype: Any = jnp.float32) -> AutoencoderKL:
    """Loads a diffusers-format AutoencoderKL folder (``config.json`` + safetensors weights)."""
    from domains.images import vae_weights  # safetensors is an optional dependency

    config_file, weights_file = vae_weights.locate_files(path)
    config = VAEConfig.from_json(config_file)
    # Build without allocating random weights; every parameter is then replaced from the file.
    model = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0), dtype=dtype))
    vae_weights.load_into(model, vae_weights.read_safetensors(weights_file))
    return model


# ----------------------------------------------------------------------------- codec


# Module-level so that every codec over the same architecture shares one compilation cache.
@functools.partial(jax.jit, static_argnums=(0, 4))
def _encode_latents(graphdef: nnx.GraphDef, params: nnx.State, x: jax.Array, key: jax.Array, sample: bool) -> jax.Array:
    vae = nnx.merge(graphdef, params)
    mean, logvar = vae.encode(x.astype(_param_dtype(params)))
    z = mean.astype(jnp.float32)
    if sample:
        z = z + jnp.exp(0.5 * logvar.astype(jnp.float32)) * jax.random.normal(key, z.shape, jnp.float32)
    return (z - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor


@functools.partial(jax.jit, static_argnums=0)
def _decode_latents(graphdef: nnx.GraphDef, params: nnx.State, z: jax.Array) -> jax.Array:
    vae = nnx.merge(graphdef, params)
    z = z.astype(jnp.float32) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    return vae.decode(z.astype(_param_dtype(params))).astype(jnp.float32)


def _param_dtype(params: nnx.State) -> Any:
    return jax.tree.leaves(params)[0].dtype


class VAECodec:
    """Images in [-1, 1] (NHWC) <-> latents ``(z - shift_factor) * scaling_factor``.

    ``encode`` returns the posterior mean, or with ``sample=True`` a draw from the posterior
    (then pass ``key``). ``chunk_size`` bounds device memory for large batches: the batch is
    run in chunks of that size (the last one padded, so one compiled shape serves all).
    Outputs are float32 jax arrays; numpy input is accepted.
    """

    def __init__(self, vae: AutoencoderKL, *, sample: bool = False, chunk_size: int | None = None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}.")
        self.config = vae.config
        self.sample = sample
        self.chunk_size = chunk_size
        self._graphdef, self._params = nnx.split(vae)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Model-space shape of one image of that size."""
        f = self.config.downsample_factor
        return (height // f, width // f, self.config.latent_channels)

    def encode(self, x: Any, key: jax.Array | None = None) -> jax.Array:
        if self.sample and key is None:
            raise ValueError("This VAECodec samples the posterior (sample=True): pass encode(x, key=...).")
        key = jax.random.key(0) if key is None else key
        return self._chunked(
            lambda i, xs: _encode_latents(self._graphdef, self._params, xs, jax.random.fold_in(key, i), self.sample), x
        )

    def decode(self, z: Any) -> jax.Array:
        return self._chunked(lambda i, zs: _decode_latents(self._graphdef, self._params, zs), z)

    def _chunked(self, fn: Callable[[int, jax.Array], jax.Array], x: Any) -> jax.Array:
        if np.ndim(x) != 4:
            raise ValueError(f"Expected a batch of shape (B, H, W, C), got shape {np.shape(x)}.")
        n = len(x)
        if self.chunk_size is None or n <= self.chunk_size:
            return fn(0, jnp.asarray(x))
        outs = []
        for i, start in enumerate(range(0, n, self.chunk_size)):
            part = jnp.asarray(x[start : start + self.chunk_size])
            pad = self.chunk_size - len(part)
            if pad:
                part = jnp.concatenate([part, jnp.zeros((pad, *part.shape[1:]), part.dtype)])
            outs.append(fn(i, part)[: self.chunk_size - pad])
        return jnp.concatenate(outs)
