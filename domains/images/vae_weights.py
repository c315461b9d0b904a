"""diffusers ``AutoencoderKL`` safetensors <-> the NNX ``AutoencoderKL`` parameters.

The NNX module mirrors diffusers' module names, so the mapping is mechanical, layer by
layer: the parameter path ``encoder.mid_block.attentions.0.to_q.kernel`` is the diffusers key
``encoder.mid_block.attentions.0.to_q.weight``. Only the leaf names and the layouts differ:

- conv ``kernel`` (kh, kw, in, out)  <-  torch ``weight`` (out, in, kh, kw)
- linear ``kernel`` (in, out)        <-  torch ``weight`` (out, in)
- GroupNorm ``scale``                <-  torch ``weight``

Checkpoints written by older diffusers versions (such as the published sd-vae-ft-mse files)
name the attention projections ``query``/``key``/``value``/``proj_attn``; they are renamed
on load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_LEGACY_ATTENTION = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)\.")
_LEGACY_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_MAX_LISTED = 25


class WeightMappingError(ValueError):
    """The checkpoint's keys or shapes do not match the architecture in config.json."""


def locate_files(path: str | Path) -> tuple[Path, Path]:
    """The config and weights files of a diffusers AutoencoderKL folder, or a clear error."""
    folder = Path(path).expanduser()
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        where = f"folder {folder} does not exist" if not folder.is_dir() else f"{folder} lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"Cannot load the VAE: {where}. Expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME}, "
            "as written by diffusers' save_pretrained: e.g. with your own copy of stabilityai/sd-vae-ft-mse, "
            "`AutoencoderKL.from_pretrained(<your copy>).save_pretrained(<folder>, safe_serialization=True)`, "
            "then point the VAE path at <folder>. Nothing is downloaded at run time."
        )
    return folder / CONFIG_NAME, folder / WEIGHTS_NAME


def read_safetensors(file: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file  # optional dependency: the `images` extra

    return load_file(str(file))


def diffusers_key(path: tuple) -> str:
    """NNX parameter path -> diffusers state-dict key."""
    *modules, leaf = path
    return ".".join([*map(str, modules), _LEAF_TO_TORCH[leaf]])


def rename_legacy_keys(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {_LEGACY_ATTENTION.sub(lambda m: f"{m[1]}{_LEGACY_NAMES[m[2]]}.", k): v for k, v in tensors.items()}


def from_torch_layout(weight: np.ndarray, target_ndim: int) -> np.ndarray:
    if target_ndim == 4:  # conv
        return weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight
    if target_ndim == 2:  # linear; legacy checkpoints may store it as a 1x1 conv
        if weight.ndim == 4 and weight.shape[2:] == (1, 1):
            weight = weight[:, :, 0, 0]
        return weight.T if weight.ndim == 2 else weight
    return weight


def to_torch_layout(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:
        return value.T
    return value


def _listing(title: str, items: list[str]) -> str:
    shown = "\n  ".join(items[:_MAX_LISTED])
    more = f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}):\n  {shown}{more}"


def load_into(model: nnx.Module, tensors: Mapping[str, np.ndarray]) -> None:
    """Replaces every ``nnx.Param`` of ``model`` by its tensor; raises on any mismatch.

    ``model`` may be abstract (from ``nnx.eval_shape``); parameters keep their dtype.
    """
    tensors = rename_legacy_keys(tensors)
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    by_key = {diffusers_key(path): (path, var) for path, var in flat}
    missing = sorted(set(by_key) - set(tensors))
    unexpected = sorted(set(tensors) - set(by_key))
    mismatched, new = [], []
    for key in sorted(set(by_key) & set(tensors)):
        path, var = by_key[key]
        target = var.get_value()  # an array, or a ShapeDtypeStruct for an abstract model
        value = from_torch_layout(np.asarray(tensors[key]), len(target.shape))
        if value.shape != tuple(target.shape):
            mismatched.append(f"{key}: checkpoint {tensors[key].shape} -> {value.shape}, model {target.shape}")
            continue
        new.append((path, var.replace(jnp.asarray(value, dtype=target.dtype))))
    problems = [
        _listing(title, items)
        for title, items in [("missing from the checkpoint", missing), ("unexpected in the checkpoint", unexpected),
                             ("shape mismatches", mismatched)]
        if items
    ]
    if problems:
        raise WeightMappingError(
            "The VAE checkpoint does not match the architecture in config.json. Check that config.json and "
            "the safetensors file come from the same AutoencoderKL.\n" + "\n".join(problems)
        )
    nnx.update(model, nnx.from_flat_state(new))


def export_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The inverse of ``load_into``: a diffusers-layout state dict, e.g. for safetensors.numpy.save_file."""
    return {
        diffusers_key(path): np.ascontiguousarray(to_torch_layout(np.asarray(var.get_value())))
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
