"""Load pytorch-fid's Inception weights into ``FIDInceptionV3``.

Two file formats hold the same tensors under the same (torch state_dict) names:

* ``.pth``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` as published.
  Reading it needs torch.
* ``.npz``: the same state_dict as numpy arrays, written once by

      python -m shortcutlib.cli.convert_inception \\
          --pth pt_inception-2015-12-05-6726825d.pth --out fid_inception.npz

  Reading it needs only numpy.

Nothing is downloaded: the file is always supplied by the user.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shortcutlib.metrics.inception import BasicConv2d, FIDInceptionV3

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILENAME
)
WEIGHTS_ENV_VAR = "SHORTCUTLIB_FID_WEIGHTS"

# Tensors of the torch model that the pool3 features do not use.
_IGNORED_PREFIXES = ("fc.", "AuxLogits.")
_IGNORED_SUFFIXES = (".num_batches_tracked",)

# torch BasicConv2d tensor suffix -> (BasicConv2d variable, layout change).
_CONV_TENSORS = {
    "conv.weight": ("kernel", (2, 3, 1, 0)),  # OIHW -> HWIO
    "bn.weight": ("scale", None),
    "bn.bias": ("bias", None),
    "bn.running_mean": ("mean", None),
    "bn.running_var": ("var", None),
}


def _missing_weights_message(path: str | os.PathLike | None) -> str:
    where = f"not found at '{path}'" if path is not None else "not given"
    return (
        f"FID Inception weights {where}. Supply pytorch-fid's weights file "
        f"{WEIGHTS_FILENAME} ({WEIGHTS_URL}) or an .npz converted from it with "
        "`python -m shortcutlib.cli.convert_inception --pth "
        f"{WEIGHTS_FILENAME} --out fid_inception.npz`, and pass its path "
        f"(or set {WEIGHTS_ENV_VAR})."
    )


def resolve_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: ``path``, else ``$SHORTCUTLIB_FID_WEIGHTS``; it must exist."""
    if path is None:
        path = os.environ.get(WEIGHTS_ENV_VAR) or None
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(_missing_weights_message(path))
    return Path(path)


def _read_pth(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"Reading '{path}' needs torch: `pip install torch`, or convert it once to .npz "
            f"on a machine that has torch with `python -m shortcutlib.cli.convert_inception "
            f"--pth {path} --out fid_inception.npz` and pass the .npz instead."
        ) from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def read_state_dict(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The torch-named tensors of a ``.pth`` or ``.npz`` weights file."""
    path = resolve_weights_path(path)
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    return _read_pth(path)


def _used(key: str) -> bool:
    return not (key.startswith(_IGNORED_PREFIXES) or key.endswith(_IGNORED_SUFFIXES))


def _conv_modules(model: FIDInceptionV3) -> dict[str, BasicConv2d]:
    """Every BasicConv2d of the model, keyed by its torch module name."""
    return {
        ".".join(str(p) for p in path): module
        for path, module in nnx.iter_modules(model)
        if isinstance(module, BasicConv2d)
    }


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """torch name -> torch shape of every tensor the FID Inception reads from a weights file."""
    shapes = {}
    for prefix, module in _conv_modules(FIDInceptionV3()).items():
        for suffix, (attr, perm) in _CONV_TENSORS.items():
            shape = tuple(getattr(module, attr).get_value().shape)
            if perm is not None:  # undo the layout change: ours[i] = torch[perm[i]]
                shape = tuple(shape[perm.index(i)] for i in range(len(shape)))
            shapes[f"{prefix}.{suffix}"] = shape
    return shapes


def load_state_dict_into(model: FIDInceptionV3, state: Mapping[str, np.ndarray]) -> FIDInceptionV3:
    """Copy torch-named tensors into ``model`` (in place); names and shapes must match exactly."""
    expected: set[str] = set()
    for prefix, module in _conv_modules(model).items():
        for suffix, (attr, perm) in _CONV_TENSORS.items():
            key = f"{prefix}.{suffix}"
            expected.add(key)
            if key not in state:
                raise KeyError(f"weights file lacks '{key}': is it the FID Inception ({WEIGHTS_FILENAME})?")
            value = np.asarray(state[key], dtype=np.float32)
            if perm is not None:
                value = value.transpose(perm)
            variable = getattr(module, attr)
            target_shape = tuple(variable.get_value().shape)
            if target_shape != value.shape:
                raise ValueError(
                    f"'{key}' has shape {value.shape} after layout change, model expects {target_shape}"
                )
            variable.set_value(jnp.asarray(value))
    unexpected = sorted(k for k in state if _used(k) and k not in expected)
    if unexpected:
        raise KeyError(f"weights file has tensors the FID Inception does not use: {unexpected[:5]}...")
    return model


def load_inception(
    path: str | os.PathLike | None = None,
    *,
    precision: jax.lax.PrecisionLike = jax.lax.Precision.HIGHEST,
) -> FIDInceptionV3:
    """Build ``FIDInceptionV3`` from a ``.pth``/``.npz`` weights file (see module doc)."""
    return load_state_dict_into(FIDInceptionV3(precision=precision), read_state_dict(path))


def convert(pth: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the tensors the FID needs from a ``.pth`` to an ``.npz`` (torch names kept)."""
    state = _read_pth(resolve_weights_path(pth))
    used = {k: v for k, v in state.items() if _used(k)}
    # Check against the architecture before writing, so a wrong file fails here.
    load_state_dict_into(FIDInceptionV3(), used)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:  # a file object keeps the name as given (no added .npz)
        np.savez(f, **used)
    return out
