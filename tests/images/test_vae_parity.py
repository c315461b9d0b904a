"""The NNX AutoencoderKL against diffusers' PyTorch one, and the loading/codec contracts.

The parity tests need the `test` extra (torch, diffusers) and skip without it; the rest run
with the core install plus safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

from domains.images import vae_weights  # noqa: E402
from domains.images.vae import AutoencoderKL, VAECodec, VAEConfig, load_vae  # noqa: E402
from shortcutlib.domain import Codec  # noqa: E402

ATOL = 1e-4

# Small but complete: a downsampling and an upsampling stage, a width change (shortcut convs),
# mid attention. Non-square inputs catch height/width mix-ups.
TINY = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, latent_channels=4, sample_size=32)
DEEPER = dict(block_out_channels=(16, 32, 32), layers_per_block=2, norm_num_groups=16, latent_channels=3,
              in_channels=2, out_channels=5, sample_size=32)


# Compiled once per architecture and shape, shared by the tests (eager NNX is slow on CPU).
_encode = nnx.jit(lambda model, x: model.encode(x))
_decode = nnx.jit(lambda model, z: model.decode(z))


def _torch_vae(tmp_path: Path, arch: dict, seed: int = 0):
    """A diffusers AutoencoderKL with every weight randomised, saved with save_pretrained."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    n = len(arch["block_out_channels"])
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n, **arch
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)  # not the default 1, so a wrong or missed mapping shows
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2)
            else:
                p.normal_(0.0, (p[0].numel()) ** -0.5)  # fan-in scaling keeps activations O(1)
    folder = tmp_path / "vae"
    model.save_pretrained(folder, safe_serialization=True)
    return torch, model, folder


def _torch_outputs(torch, model, x_nhwc: np.ndarray, z_nhwc: np.ndarray):
    with torch.no_grad():
        dist = model.encode(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2))).latent_dist
        image = model.decode(torch.from_numpy(z_nhwc.transpose(0, 3, 1, 2))).sample
    to_nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    return to_nhwc(dist.mean), to_nhwc(dist.logvar), to_nhwc(image)


def _assert_parity(model: AutoencoderKL, torch, torch_model, cfg: VAEConfig, height: int, width: int) -> None:
    rng = np.random.default_rng(1)
    f = cfg.downsample_factor
    x = rng.uniform(-1, 1, (2, height, width, cfg.in_channels)).astype(np.float32)
    z = rng.normal(size=(2, height // f, width // f, cfg.latent_channels)).astype(np.float32)
    ref_mean, ref_logvar, ref_image = _torch_outputs(torch, torch_model, x, z)
    mean, logvar = _encode(model, x)
    image = _decode(model, z)
    assert mean.shape == ref_mean.shape and image.shape == ref_image.shape
    # The references are O(1), so an absolute tolerance is a tight relative one too.
    assert np.abs(ref_mean).max() > 0.1 and np.abs(ref_image).max() > 0.1
    np.testing.assert_allclose(np.asarray(mean), ref_mean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(logvar), ref_logvar, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(image), ref_image, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", [TINY, DEEPER], ids=["tiny", "deeper"])
def test_matches_diffusers(tmp_path: Path, arch: dict) -> None:
    torch, torch_model, folder = _torch_vae(tmp_path, arch)
    model = load_vae(folder)
    assert model.config.block_out_channels == arch["block_out_channels"]
    _assert_parity(model, torch, torch_model, model.config, height=24, width=32)


def test_legacy_attention_names(tmp_path: Path) -> None:
    """Checkpoints from older diffusers (query/key/value/proj_attn) load the same."""
    torch, torch_model, folder = _torch_vae(tmp_path, TINY, seed=3)
    weights = folder / vae_weights.WEIGHTS_NAME
    renamed = {
        k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
        .replace(".to_out.0.", ".proj_attn."): v
        for k, v in load_file(str(weights)).items()
    }
    assert any(".proj_attn." in k for k in renamed)
    save_file(renamed, str(weights))
    model = load_vae(folder)
    _assert_parity(model, torch, torch_model, model.config, height=24, width=32)


# ----------------------------------------------------------------------------- without torch


def _random_vae(cfg: VAEConfig, seed: int = 0) -> AutoencoderKL:
    """Random weights drawn with numpy: flax's initialisers compile slowly, one per shape."""
    model = nnx.eval_shape(lambda: AutoencoderKL(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    flat = [
        (path, var.replace(rng.normal(0.0, np.prod(var.shape[:-1]) ** -0.5 if path[-1] == "kernel" else 0.2,
                                      var.shape).astype(np.float32)))
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    ]
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def _saved_random_vae(tmp_path: Path, **overrides) -> tuple[AutoencoderKL, Path]:
    cfg = VAEConfig(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    **{**TINY, **overrides})
    model = _random_vae(cfg)
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / vae_weights.CONFIG_NAME).write_text(json.dumps({"_class_name": "AutoencoderKL", **cfg.__dict__}))
    save_file(vae_weights.export_state_dict(model), str(folder / vae_weights.WEIGHTS_NAME))
    return model, folder


def test_round_trip_through_diffusers_layout(tmp_path: Path) -> None:
    model, folder = _saved_random_vae(tmp_path, use_quant_conv=False, mid_block_add_attention=False)
    loaded = load_vae(folder)
    assert loaded.quant_conv is None and len(loaded.encoder.mid_block.attentions) == 0
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(loaded))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))
    weights = load_file(str(folder / vae_weights.WEIGHTS_NAME))
    assert weights["encoder.conv_in.weight"].shape == (32, 3, 3, 3)  # torch (out, in, kh, kw)


def test_missing_folder_or_file_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json and diffusion_pytorch_model.safetensors") as err:
        load_vae(tmp_path / "nowhere")
    assert "save_pretrained" in str(err.value) and "sd-vae-ft-mse" in str(err.value)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        load_vae(tmp_path)


def test_mapping_error_lists_missing_unexpected_and_mismatched(tmp_path: Path) -> None:
    _, folder = _saved_random_vae(tmp_path)
    file = folder / vae_weights.WEIGHTS_NAME
    weights = load_file(str(file))
    del weights["decoder.conv_out.bias"]
    weights["encoder.extra_layer.weight"] = np.zeros(3, np.float32)
    weights["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    save_file(weights, str(file))
    with pytest.raises(vae_weights.WeightMappingError) as err:
        load_vae(folder)
    message = str(err.value)
    assert "missing from the checkpoint (1):\n  decoder.conv_out.bias" in message
    assert "unexpected in the checkpoint (1):\n  encoder.extra_layer.weight" in message
    assert "shape mismatches (1):\n  quant_conv.weight" in message


def test_codec_contract(tmp_path: Path) -> None:
    model, _ = _saved_random_vae(tmp_path)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 24, 32, 3)).astype(np.float32)
    # References in batches of 2, the shape the parity tests compile.
    mean = np.concatenate([np.asarray(_encode(model, x[:2])[0]), np.asarray(_encode(model, x[1:])[0][1:])])
    logvar = np.concatenate([np.asarray(_encode(model, x[:2])[1]), np.asarray(_encode(model, x[1:])[1][1:])])
    images = np.concatenate([np.asarray(_decode(model, mean[:2])), np.asarray(_decode(model, mean[1:])[1:])])

    codec = VAECodec(model, chunk_size=2)  # 3 = 2 + 1 (padded)
    assert isinstance(codec, Codec)
    latents = codec.encode(x)
    assert latents.shape == (3, *codec.latent_shape(24, 32)) == (3, 12, 16, 4)
    np.testing.assert_allclose(np.asarray(latents), mean * 0.18215, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(codec.decode(latents)), images, atol=1e-5, rtol=1e-5)

    sampler = VAECodec(model, sample=True, chunk_size=2)
    with pytest.raises(ValueError, match="key"):
        sampler.encode(x)
    a = np.asarray(sampler.encode(x, key=jax.random.key(1)))
    np.testing.assert_array_equal(a, np.asarray(sampler.encode(x, key=jax.random.key(1))))
    noise = (a / 0.18215 - mean) / np.exp(0.5 * logvar)
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1  # standard normal draws
    assert not np.allclose(noise[0], noise[2])  # chunks draw different noise
