"""Backbones: shapes, zero init, conditioning, pure Param state, attention, bf16, DiT sizes."""

from __future__ import annotations

import math

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


def perturb(model: nnx.Module, seed: int = 0, scale: float = 0.1) -> nnx.Module:
    """Add noise to every Param so zero-initialised layers stop hiding the inputs."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def inputs(shape: tuple[int, ...], seed: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (B, *shape))
    t = jax.random.uniform(k2, (B,))
    d = jnp.full((B,), 1.0 / 8)
    return x, t, d


# name -> (constructor(dtype), per-example data shape, cond maker(seed) or None)
def _labels(seed: int) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (B,), 0, NUM_CLASSES)


def _obs(shape: tuple[int, ...]):
    return lambda seed: jax.random.normal(jax.random.key(100 + seed), (B, *shape))


CASES = {
    "mlp_uncond": (lambda dt: ResidualMLP((2,), 32, 2, dtype=dt, rngs=nnx.Rngs(0)), (2,), None),
    "mlp_labels": (lambda dt: ResidualMLP((5,), 32, 2, num_classes=NUM_CLASSES, dtype=dt, rngs=nnx.Rngs(0)), (5,), _labels),
    "mlp_obs": (lambda dt: ResidualMLP((3,), 32, 2, obs_dim=6, dtype=dt, rngs=nnx.Rngs(0)), (3,), _obs((6,))),
    "mlp_chunk_obs_history": (
        lambda dt: ResidualMLP((8, 2), 32, 2, obs_dim=6, obs_horizon=2, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 2),
        _obs((2, 6)),
    ),
    "dit_uncond": (lambda dt: DiT((8, 8, 1), 2, 32, 2, 4, dtype=dt, rngs=nnx.Rngs(0)), (8, 8, 1), None),
    "dit_labels": (
        lambda dt: DiT((8, 8, 3), 4, 32, 2, 2, num_classes=NUM_CLASSES, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 8, 3),
        _labels,
    ),
    "chunk_obs_history": (
        lambda dt: ChunkTransformer(8, 2, 6, 2, 32, 2, 4, dtype=dt, rngs=nnx.Rngs(0)),
        (8, 2),
        _obs((2, 6)),
    ),
    "chunk_obs_single": (
        lambda dt: ChunkTransformer(4, 3, 5, 1, 32, 1, 2, dtype=dt, rngs=nnx.Rngs(0)),
        (4, 3),
        _obs((5,)),
    ),
    "chunk_uncond": (lambda dt: ChunkTransformer(4, 3, 0, 1, 32, 1, 2, dtype=dt, rngs=nnx.Rngs(0)), (4, 3), None),
}


def make(name: str, dtype=jnp.float32):
    build, shape, cond_fn = CASES[name]
    model = build(dtype)
    cond = cond_fn(0) if cond_fn else None
    return model, shape, cond, cond_fn


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
def test_shape_dtype_and_zero_at_init(name):
    model, shape, cond, _ = make(name)
    x, t, d = inputs(shape)
    out = model(x, t, d, cond)
    assert out.shape == x.shape and out.dtype == jnp.float32
    # adaLN-Zero / zero-initialised output layer: the untrained model predicts exactly 0.
    assert np.all(np.asarray(out) == 0.0)


@pytest.mark.parametrize("name", list(CASES))
def test_split_gives_only_params_and_merge_roundtrips(name):
    model, shape, cond, _ = make(name)
    perturb(model)
    graphdef, state = nnx.split(model)
    variables = jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert variables and all(type(v) is nnx.Param for v in variables)
    x, t, d = inputs(shape)

    @jax.jit
    def apply(state, x, t, d, cond):
        return nnx.merge(graphdef, state)(x, t, d, cond)

    np.testing.assert_allclose(apply(state, x, t, d, cond), model(x, t, d, cond), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_output_depends_on_t_d_and_cond(name):
    model, shape, cond, cond_fn = make(name)
    perturb(model)
    x, t, d = inputs(shape)
    base = np.asarray(model(x, t, d, cond))

    def differs(out):
        return float(np.abs(np.asarray(out) - base).max()) > 1e-4

    assert differs(model(x, jnp.clip(t + 0.3, 0, 1) * 0.7, d, cond)), "output ignores t"
    assert differs(model(x, t, jnp.zeros_like(d), cond)), "output ignores d (d=1/8 vs d=0)"
    assert differs(model(x, t, jnp.full_like(d, 1.0 / 128), cond)), "output ignores d (1/8 vs 1/128)"
    assert differs(model(x + 0.5, t, d, cond)), "output ignores x_t"
    if cond_fn is not None:
        other = cond_fn(1)
        if jnp.issubdtype(other.dtype, jnp.integer):
            other = (cond + 1) % NUM_CLASSES  # every label changes
        assert differs(model(x, t, d, other)), "output ignores cond"


@pytest.mark.parametrize("name", ["mlp_labels", "dit_labels"])
def test_null_label_differs_from_real_label(name):
    model, shape, labels, _ = make(name)
    perturb(model)
    x, t, d = inputs(shape)
    real = model(x, t, d, labels)
    null = model(x, t, d, jnp.full_like(labels, NUM_CLASSES))
    per_example = jnp.abs(real - null).reshape(B, -1).max(axis=1)
    assert bool(jnp.all(per_example > 1e-4))
    assert count_params(model.cond_embedder.label_embedder) == (NUM_CLASSES + 1) * 32


def test_examples_are_independent():
    """No mixing across the batch: example 0 is the same alone or in a batch."""
    model, shape, labels, _ = make("dit_labels")
    perturb(model)
    x, t, d = inputs(shape)
    full = model(x, t, d, labels)
    alone = model(x[:1], t[:1], d[:1], labels[:1])
    np.testing.assert_allclose(full[:1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp_labels", "dit_labels", "chunk_obs_history"])
def test_bf16_compute_close_to_f32(name):
    m32, shape, cond, _ = make(name, jnp.float32)
    m16, _, _, _ = make(name, jnp.bfloat16)
    perturb(m32)
    perturb(m16)
    # Parameters stay float32 under bf16 compute.
    assert {p.dtype for p in jax.tree.leaves(nnx.state(m16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    x, t, d = inputs(shape)
    y32 = m32(x, t, d, cond)
    y16 = jax.jit(lambda x, t, d, c: m16(x, t, d, c))(x, t, d, cond)
    assert y16.dtype == jnp.float32
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert rel < 0.05, rel


def test_missing_cond_is_a_clear_error():
    model, shape, _, _ = make("dit_labels")
    x, t, d = inputs(shape)
    with pytest.raises(ValueError, match="class-conditional"):
        model(x, t, d, None)
    model, shape, _, _ = make("mlp_chunk_obs_history")
    x, t, d = inputs(shape)
    with pytest.raises(ValueError, match="obs_dim"):
        model(x, t, d, jnp.ones((B, 3, 6)))


def test_dict_cond_is_accepted():
    model, shape, obs, _ = make("mlp_obs")
    perturb(model)
    x, t, d = inputs(shape)
    np.testing.assert_array_equal(model(x, t, d, {"obs": obs}), model(x, t, d, obs))


def test_residual_mlp_param_count():
    h, f, c = 32, 5, NUM_CLASSES
    scalar = 256 * h + h + h * h + h
    block = 2 * (h * 4 * h) + 4 * h + h + (h * 3 * h + 3 * h)
    final = (h * 2 * h + 2 * h) + (h * f + f)
    expected = (f * h + h) + 2 * scalar + (c + 1) * h + 2 * block + final
    assert count_params(make("mlp_labels")[0]) == expected


# ---------------------------------------------------------------- DiT parts


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_unpatchify_identity(p):
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    tokens = patchify(x, p)
    assert tokens.shape == (2, (8 // p) * (12 // p), p * p * 3)
    # Token 1 is the second patch of the first row.
    np.testing.assert_array_equal(tokens[:, 1], x[:, :p, p : 2 * p, :].reshape(2, -1))
    np.testing.assert_array_equal(unpatchify(tokens, p, (8, 12, 3)), x)


def test_attention_matches_handwritten_softmax():
    hidden, heads, n = 8, 2, 5
    attn = Attention(hidden, heads, dtype=jnp.float32, param_dtype=jnp.float32, rngs=nnx.Rngs(3))
    perturb(attn)  # non-zero biases too
    x = np.asarray(jax.random.normal(jax.random.key(4), (2, n, hidden)), np.float64)
    wqkv, bqkv = np.asarray(attn.qkv.kernel.value, np.float64), np.asarray(attn.qkv.bias.value, np.float64)
    wo, bo = np.asarray(attn.proj.kernel.value, np.float64), np.asarray(attn.proj.bias.value, np.float64)
    hd = hidden // heads
    qkv = (x @ wqkv + bqkv).reshape(2, n, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, N, hd)
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ref = (w @ v).transpose(0, 2, 1, 3).reshape(2, n, hidden) @ wo + bo
    np.testing.assert_allclose(attn(jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-5)


# Parameters and "Gflops" of the DiT paper (Table 1 / 4, 256x256 images = 32x32x4 latents).
PAPER = {"S": (33e6, 6.06), "B": (130e6, 23.01), "L": (458e6, 80.71), "XL": (675e6, 118.64)}


def abstract_dit(size: str, patch: int = 2):
    return nnx.eval_shape(lambda: DiT((32, 32, 4), **dit_config(size, patch), num_classes=1000, rngs=nnx.Rngs(0)))


def expected_dit_params(size: str, patch: int = 2, channels: int = 4, tokens: int = 256, classes: int = 1000) -> int:
    depth, h, _ = (dit_config(size, patch)[k] for k in ("depth", "hidden", "num_heads"))
    pd = patch * patch * channels
    scalar = 256 * h + h + h * h + h
    block = (3 * h * h + 3 * h) + (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h) + (6 * h * h + 6 * h)
    final = (2 * h * h + 2 * h) + (h * pd + pd)
    return (pd * h + h) + 2 * scalar + (classes + 1) * h + depth * block + final


@pytest.mark.parametrize("size", list(PAPER))
def test_dit_param_counts_and_flops_match_paper(size):
    model = abstract_dit(size)
    n = count_params(model)
    assert n == expected_dit_params(size)
    h = model.hidden
    # The reference model has a learned sigma (twice the output channels), a frozen positional
    # parameter and no d embedder; convert before comparing with the paper.
    comparable = n - (256 * h + h + h * h + h) + 256 * h + (h * 16 + 16)
    paper_params, paper_gflops = PAPER[size]
    assert abs(comparable / paper_params - 1) < 0.03, comparable
    if size == "XL":
        assert comparable == 675_129_632  # the reference implementation's exact count
    macs = flops_per_example((32, 32, 4), 2, h, len(model.blocks)) / 2
    assert abs(macs / 1e9 / paper_gflops - 1) < 0.01


def test_dit_b2_imagenet_size_range():
    assert 120e6 < count_params(abstract_dit("B")) < 140e6


def test_dit_config_rejects_unknown_size():
    with pytest.raises(ValueError, match="choose one of"):
        dit_config("M", 2)
