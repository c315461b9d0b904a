"""Backbones: shapes, zero init, conditioning, pure Param state, attention, bf16, DiT sizes.

Every model is built once and applied through one jitted ``merge(graphdef, state)`` function
(the training core's functional form), so each configuration compiles once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from shortcutlib.nn import (
    ChunkTransformer,
    DiT,
    ResidualMLP,
    count_params,
    dit_config,
    flops_per_example,
    patchify,
    sinusoidal_embedding,
    unpatchify,
)
from shortcutlib.nn.dit import Attention

B = 4
NUM_CLASSES = 10
HIDDEN = 32


def perturbed(state: nnx.State, seed: int = 0, scale: float = 0.1) -> nnx.State:
    """Add noise to every Param so zero-initialised layers stop hiding the inputs (numpy: no compiles)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(np.asarray(p) + scale * rng.normal(size=p.shape), p.dtype), state)


def labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, (B,)).astype(np.int32)


def observations(shape: tuple[int, ...]) -> Callable[[int], np.ndarray]:
    return lambda seed: np.random.default_rng(100 + seed).normal(size=(B, *shape)).astype(np.float32)


# name -> (constructor(dtype), per-example data shape, cond maker(seed) or None)
CASES: dict[str, tuple[Callable[[Any], nnx.Module], tuple[int, ...], Callable[[int], np.ndarray] | None]] = {
    "mlp_uncond": (lambda dt: ResidualMLP((2,), HIDDEN, 2, dtype=dt, rngs=nnx.Rngs(0)), (2,), None),
    "mlp_labels": (
        lambda dt: ResidualMLP((5,), HIDDEN, 2, num_classes=NUM_CLASSES, dtype=dt, rngs=nnx.Rngs(0)),
        (5,),
        labels,
    ),
    "mlp_chunk_obs_history": (
        lambda dt: ResidualMLP((8, 2), HIDDEN, 2, obs_dim=6, obs_horizon=2, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 2),
        observations((2, 6)),
    ),
    "dit_uncond": (lambda dt: DiT((8, 8, 1), 2, HIDDEN, 2, 4, dtype=dt, rngs=nnx.Rngs(0)), (8, 8, 1), None),
    "dit_labels": (
        lambda dt: DiT((8, 8, 3), 4, HIDDEN, 2, 2, num_classes=NUM_CLASSES, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 8, 3),
        labels,
    ),
    "chunk_obs_history": (
        lambda dt: ChunkTransformer(8, 2, 6, 2, HIDDEN, 2, 4, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 2),
        observations((2, 6)),
    ),
    "chunk_obs_single": (
        lambda dt: ChunkTransformer(4, 3, 5, 1, HIDDEN, 1, 2, dtype=dt, rngs=nnx.Rngs(0)),
        (4, 3),
        observations((5,)),
    ),
}


class Built(NamedTuple):
    model: nnx.Module
    state: nnx.State  # as initialised
    noisy: nnx.State  # perturbed
    apply: Callable[..., jax.Array]  # jitted (state, x, t, d, cond) -> velocity
    shape: tuple[int, ...]
    cond_fn: Callable[[int], np.ndarray] | None


@functools.lru_cache(maxsize=None)
def build(name: str, dtype: Any = jnp.float32) -> Built:
    make, shape, cond_fn = CASES[name]
    model = make(dtype)
    graphdef, state = nnx.split(model)

    @jax.jit
    def apply(state, x, t, d, cond):
        return nnx.merge(graphdef, state)(x, t, d, cond)

    return Built(model, state, perturbed(state), apply, shape, cond_fn)


def inputs(shape: tuple[int, ...], seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, *shape)).astype(np.float32)
    t = rng.uniform(size=(B,)).astype(np.float32)
    d = np.full((B,), 1.0 / 8, np.float32)
    return x, t, d


# ---------------------------------------------------------------- embeddings


def test_sinusoidal_embedding_values_and_d_resolution():
    x = jnp.array([0.0, 1.0 / 128, 0.5])
    emb = sinusoidal_embedding(x, 8)
    assert emb.shape == (3, 8) and emb.dtype == jnp.float32
    # x = 0: cos(0) = 1, sin(0) = 0.
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    args = 0.5 * 1000.0 * freqs
    np.testing.assert_allclose(emb[2], np.concatenate([np.cos(args), np.sin(args)]), rtol=1e-5, atol=1e-5)
    # The finest shortcut d = 1/128 must be clearly apart from d = 0 in the default width.
    full = sinusoidal_embedding(jnp.array([0.0, 1.0 / 128]), 256)
    assert float(jnp.linalg.norm(full[0] - full[1])) > 3.0
    assert sinusoidal_embedding(x, 7).shape == (3, 7)


# ---------------------------------------------------------------- every backbone


@pytest.mark.parametrize("name", list(CASES))
def test_shape_dtype_zero_init_and_only_params(name):
    b = build(name)
    variables = jax.tree.leaves(b.state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert variables and all(type(v) is nnx.Param for v in variables)
    x, t, d = inputs(b.shape)
    cond = b.cond_fn(0) if b.cond_fn else None
    out = b.apply(b.state, x, t, d, cond)
    assert out.shape == x.shape and out.dtype == jnp.float32
    # adaLN-Zero / zero-initialised output layer: the untrained model predicts exactly 0.
    assert np.all(np.asarray(out) == 0.0)


@pytest.mark.parametrize("name", list(CASES))
def test_output_depends_on_x_t_d_and_cond(name):
    b = build(name)
    x, t, d = inputs(b.shape)
    cond = b.cond_fn(0) if b.cond_fn else None
    base = np.asarray(b.apply(b.noisy, x, t, d, cond))

    def differs(x=x, t=t, d=d, cond=cond):
        return float(np.abs(np.asarray(b.apply(b.noisy, x, t, d, cond)) - base).max()) > 1e-4

    assert differs(t=(t + 0.3) % 1.0), "output ignores t"
    assert differs(d=np.zeros_like(d)), "output ignores d (1/8 vs 0)"
    assert differs(d=np.full_like(d, 1.0 / 128)), "output ignores d (1/8 vs 1/128)"
    assert differs(x=x + 0.5), "output ignores x_t"
    if b.cond_fn is not None:
        other = b.cond_fn(1)
        if np.issubdtype(other.dtype, np.integer):
            other = (cond + 1) % NUM_CLASSES  # every label changes
        assert differs(cond=other), "output ignores cond"
    # Examples do not mix: permuting the batch permutes the output.
    perm = np.array([2, 0, 3, 1])
    cond_p = None if cond is None else cond[perm]
    np.testing.assert_allclose(b.apply(b.noisy, x[perm], t[perm], d[perm], cond_p), base[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp_labels", "dit_labels"])
def test_null_label_differs_from_real_label(name):
    b = build(name)
    x, t, d = inputs(b.shape)
    real = b.apply(b.noisy, x, t, d, b.cond_fn(0))
    null = b.apply(b.noisy, x, t, d, np.full((B,), NUM_CLASSES, np.int32))
    per_example = jnp.abs(real - null).reshape(B, -1).max(axis=1)
    assert bool(jnp.all(per_example > 1e-4))
    assert count_params(b.model.cond_embedder.label_embedder) == (NUM_CLASSES + 1) * HIDDEN


@pytest.mark.parametrize("name", ["dit_labels", "mlp_chunk_obs_history"])
def test_bf16_compute_close_to_f32(name):
    f32, bf16 = build(name, jnp.float32), build(name, jnp.bfloat16)
    # Parameters stay float32 under bf16 compute.
    assert {p.dtype for p in jax.tree.leaves(bf16.noisy)} == {jnp.dtype(jnp.float32)}
    x, t, d = inputs(f32.shape)
    cond = f32.cond_fn(0)
    y32 = f32.apply(f32.noisy, x, t, d, cond)
    y16 = bf16.apply(bf16.noisy, x, t, d, cond)  # same seed, same perturbation
    assert y16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert 0 < rel < 0.05, rel


def test_missing_or_mismatched_cond_is_a_clear_error():
    b = build("dit_labels")
    x, t, d = inputs(b.shape)
    with pytest.raises(ValueError, match="class-conditional"):
        b.apply(b.state, x, t, d, None)
    b = build("mlp_chunk_obs_history")
    x, t, d = inputs(b.shape)
    with pytest.raises(ValueError, match="obs_dim"):
        b.apply(b.state, x, t, d, np.ones((B, 3, 6), np.float32))


def test_dict_cond_is_accepted():
    b = build("mlp_chunk_obs_history")
    x, t, d = inputs(b.shape)
    obs = b.cond_fn(0)
    np.testing.assert_array_equal(b.apply(b.noisy, x, t, d, {"obs": obs}), b.apply(b.noisy, x, t, d, obs))


def test_residual_mlp_param_count():
    h, f, c = HIDDEN, 5, NUM_CLASSES
    scalar = 256 * h + h + h * h + h
    block = 2 * (h * 4 * h) + 4 * h + h + (h * 3 * h + 3 * h)
    final = (h * 2 * h + 2 * h) + (h * f + f)
    expected = (f * h + h) + 2 * scalar + (c + 1) * h + 2 * block + final
    assert count_params(build("mlp_labels").model) == expected


# ---------------------------------------------------------------- DiT parts


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_unpatchify_identity(p):
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (8 // p) * (12 // p), p * p * 3)
    # Token 1 is the second patch of the first row.
    np.testing.assert_array_equal(tokens[:, 1], x[:, :p, p : 2 * p, :].reshape(2, -1))
    np.testing.assert_array_equal(unpatchify(tokens, p, (8, 12, 3)), x)


def test_attention_matches_handwritten_softmax():
    hidden, heads, n = 8, 2, 5
    attn = Attention(hidden, heads, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(3))
    graphdef, state = nnx.split(attn)
    state = perturbed(state)  # non-zero biases too
    x = np.random.default_rng(4).normal(size=(2, n, hidden))
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x.astype(np.float32))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), state)
    hd = hidden // heads
    qkv = (x @ p["qkv"]["kernel"] + p["qkv"]["bias"]).reshape(2, n, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, N, hd)
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ref = (w @ v).transpose(0, 2, 1, 3).reshape(2, n, hidden) @ p["proj"]["kernel"] + p["proj"]["bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# Parameters and "Gflops" of the DiT paper (Table 1 / 4, 256x256 images = 32x32x4 latents).
PAPER = {"S": (33e6, 6.06), "B": (130e6, 23.01), "L": (458e6, 80.71), "XL": (675e6, 118.64)}


def abstract_dit(size: str, patch: int = 2) -> DiT:
    """A paper-sized DiT with shapes only: nothing is allocated."""
    return nnx.eval_shape(lambda: DiT((32, 32, 4), **dit_config(size, patch), num_classes=1000, rngs=nnx.Rngs(0)))


def expected_dit_params(size: str, patch: int = 2, channels: int = 4, classes: int = 1000) -> int:
    cfg = dit_config(size, patch)
    depth, h = cfg["depth"], cfg["hidden"]
    pd = patch * patch * channels
    scalar = 256 * h + h + h * h + h
    block = (3 * h * h + 3 * h) + (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h) + (6 * h * h + 6 * h)
    final = (2 * h * h + 2 * h) + (h * pd + pd)
    return (pd * h + h) + 2 * scalar + (classes + 1) * h + depth * block + final


def test_dit_b2_param_count_without_allocating():
    n = count_params(abstract_dit("B"))
    assert n == expected_dit_params("B")  # the closed form used for every size below
    assert 120e6 < n < 140e6


@pytest.mark.parametrize("size", list(PAPER))
def test_dit_sizes_match_paper(size):
    cfg = dit_config(size, 2)
    h = cfg["hidden"]
    # The reference model has a learned sigma (twice the output channels), a frozen positional
    # parameter and no d embedder; convert before comparing with the paper.
    comparable = expected_dit_params(size) - (256 * h + h + h * h + h) + 256 * h + (h * 16 + 16)
    paper_params, paper_gflops = PAPER[size]
    assert abs(comparable / paper_params - 1) < 0.03, comparable
    if size == "XL":
        assert comparable == 675_129_632  # the reference implementation's exact count
    # The paper's "Gflops" count multiply-adds: half of our FLOPs.
    macs = flops_per_example((32, 32, 4), 2, h, cfg["depth"]) / 2
    assert abs(macs / 1e9 / paper_gflops - 1) < 0.01


def test_dit_config_rejects_unknown_size():
    with pytest.raises(ValueError, match="choose one of"):
        dit_config("M", 2)
