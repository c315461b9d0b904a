"""The Inception-V3 variant used for FID, in Flax NNX, channels-last.

This is the network of pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``,
itself ported from the 2015-12-05 TensorFlow graph that defined FID). Besides
its weights it differs from torchvision's Inception-V3 in two places, which
published FID numbers depend on:

* the average-pool branches of the A, C and E blocks ignore padded zeros
  (``count_include_pad=False``, as TensorFlow's pooling does);
* the last E block (``Mixed_7c``) pools its branch with a max, not an average.

Batch norm runs in inference mode with ``eps = 0.001``. Submodule names mirror
torchvision's attribute names so that a torch state_dict maps onto this module
one to one; build it with ``inception_weights.load_inception(path)``. The model
takes preprocessed input, NHWC float in ``[-1, 1]``, normally 299x299 (see
``fid.preprocess``), and returns the 2048 pool3 features.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FEATURE_DIM = 2048
BN_EPS = 1e-3

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nnx.Module):
    """Conv (no bias) -> batch norm with running statistics -> ReLU.

    Variables start as placeholders (zeros, unit scale and variance): this network
    is only ever used with pretrained weights, loaded by ``inception_weights``.
    They are created from numpy so that building the 94 layers costs no JAX work.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        *,
        stride: int = 1,
        padding: IntPair = 0,
        precision: jax.lax.PrecisionLike,
    ):
        pad_h, pad_w = _pair(padding)
        self.stride = stride
        self.padding = ((pad_h, pad_h), (pad_w, pad_w))
        self.precision = precision
        self.kernel = nnx.Param(np.zeros((*_pair(kernel_size), in_channels, out_channels), np.float32))
        self.scale = nnx.Param(np.ones(out_channels, np.float32))
        self.bias = nnx.Param(np.zeros(out_channels, np.float32))
        self.mean = nnx.BatchStat(np.zeros(out_channels, np.float32))
        self.var = nnx.BatchStat(np.ones(out_channels, np.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x,
            self.kernel[...],
            window_strides=(self.stride, self.stride),
            padding=self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        y = (y - self.mean[...]) * jax.lax.rsqrt(self.var[...] + BN_EPS) * self.scale[...] + self.bias[...]
        return jax.nn.relu(y)


def _avg_pool_3x3_same(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool: padded zeros do not count in the mean.
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, *, stride: int, padding: int = 0) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=pad)


def _concat(parts: Sequence[jax.Array]) -> jax.Array:
    return jnp.concatenate(parts, axis=-1)


class FIDInceptionA(nnx.Module):
    """Mixed_5b/5c/5d."""

    def __init__(self, in_channels: int, pool_features: int, *, precision):
        conv = partial(BasicConv2d, precision=precision)
        self.branch1x1 = conv(in_channels, 64, 1)
        self.branch5x5_1 = conv(in_channels, 48, 1)
        self.branch5x5_2 = conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
        self.branch_pool = conv(in_channels, pool_features, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool_3x3_same(x))
        return _concat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool])


class InceptionB(nnx.Module):
    """Mixed_6a (grid reduction 35 -> 17)."""

    def __init__(self, in_channels: int, *, precision):
        conv = partial(BasicConv2d, precision=precision)
        self.branch3x3 = conv(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv(in_channels, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return _concat([self.branch3x3(x), branch3x3dbl, _max_pool_3x3(x, stride=2)])


class FIDInceptionC(nnx.Module):
    """Mixed_6b/6c/6d/6e (factorised 7x7 convolutions)."""

    def __init__(self, in_channels: int, channels_7x7: int, *, precision):
        conv = partial(BasicConv2d, precision=precision)
        c7 = channels_7x7
        self.branch1x1 = conv(in_channels, 192, 1)
        self.branch7x7_1 = conv(in_channels, c7, 1)
        self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(in_channels, c7, 1)
        self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = conv(in_channels, 192, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool_3x3_same(x))
        return _concat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool])


class InceptionD(nnx.Module):
    """Mixed_7a (grid reduction 17 -> 8)."""

    def __init__(self, in_channels: int, *, precision):
        conv = partial(BasicConv2d, precision=precision)
        self.branch3x3_1 = conv(in_channels, 192, 1)
        self.branch3x3_2 = conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv(in_channels, 192, 1)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return _concat([branch3x3, branch7x7x3, _max_pool_3x3(x, stride=2)])


class FIDInceptionE(nnx.Module):
    """Mixed_7b (average-pool branch) and Mixed_7c (max-pool branch)."""

    def __init__(self, in_channels: int, *, max_pool_branch: bool, precision):
        conv = partial(BasicConv2d, precision=precision)
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = conv(in_channels, 320, 1)
        self.branch3x3_1 = conv(in_channels, 384, 1)
        self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(in_channels, 448, 1)
        self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = conv(in_channels, 192, 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = _concat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)])
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = _concat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)])
        # The FID graph max-pools in its last block (the paper's net averages).
        pooled = _max_pool_3x3(x, stride=1, padding=1) if self.max_pool_branch else _avg_pool_3x3_same(x)
        return _concat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)])


class FIDInceptionV3(nnx.Module):
    """pytorch-fid's ``InceptionV3`` up to the final average pool (block index 3).

    ``precision`` defaults to HIGHEST so that accelerators do not drop the
    convolutions to reduced-precision (TF32/bf16) passes: FID is sensitive to it.
    """

    def __init__(self, *, precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST):
        conv = partial(BasicConv2d, precision=precision)
        kw = dict(precision=precision)
        self.Conv2d_1a_3x3 = conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, 3)
        self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, 1)
        self.Conv2d_4a_3x3 = conv(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32, **kw)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64, **kw)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64, **kw)
        self.Mixed_6a = InceptionB(288, **kw)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128, **kw)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160, **kw)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160, **kw)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192, **kw)
        self.Mixed_7a = InceptionD(768, **kw)
        self.Mixed_7b = FIDInceptionE(1280, max_pool_branch=False, **kw)
        self.Mixed_7c = FIDInceptionE(2048, max_pool_branch=True, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, 3) in [-1, 1] -> (B, 2048) pool3 features."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected NHWC input with 3 channels, got shape {x.shape}")
        # Block 0: stem to first max pool.
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool_3x3(x, stride=2)
        # Block 1: to second max pool.
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool_3x3(x, stride=2)
        # Block 2: to the auxiliary-classifier input.
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
            self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
        ):
            x = block(x)
        # Block 3: to the final (adaptive, 1x1) average pool.
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return jnp.mean(x, axis=(1, 2))
