"""Use a trained model from Python: load a run, sample at any budget, query the network.

    import shortcutlib
    model = shortcutlib.load("runs/digits/<date>")        # a run directory or its checkpoints/
    images = model.sample(16, steps=1, cond=[0, 1, 2, ...])  # uint8 digits, one network call
    v = model.velocity(x_t, t, d, cond)                    # the network: (x_t, t, d, cond) -> velocity

Everything is rebuilt from the checkpoint alone: its own config, its domain's state
(normalisers, class names) and the EMA weights. Samples are in data space (``Domain.output``:
uint8 images, raw vectors and actions). Each (budget, batch size, guidance scale) compiles once
and is reused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from shortcutlib.checkpoint import Checkpointer, read_meta
from shortcutlib.config import (
    ConfigError,
    RunConfig,
    as_dict,
    instantiate,
    locate,
    resolve,
)
from shortcutlib.domain import Domain, SampleFn
from shortcutlib.inference import make_sample_fn
from shortcutlib.train.loop import Run, build_run
from shortcutlib.train.phases import plan_phases
from shortcutlib.velocity import bind


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoints folder of a run directory (or the folder itself)."""
    p = Path(path).expanduser()
    for candidate in (p, p / "checkpoints", p.parent):
        if candidate.is_dir() and any(c.name.isdigit() for c in candidate.iterdir()):
            return candidate
    raise ConfigError(f"no checkpoint in {path}: give a run directory or its checkpoints/ folder.")


def build_domain(config: RunConfig, state: dict[str, Any] | None = None) -> Domain:
    """The configured domain (the one place the core turns a config into one). With a checkpoint's
    ``state`` it is restored from that: a domain class may offer ``restore(config, state)`` to do
    so without its training data."""
    if state is None:
        return instantiate(config.domain)
    cls = locate(config.domain._target_, "domain")
    if hasattr(cls, "restore"):
        return cls.restore(config.domain, state)
    domain = cls(config.domain)
    domain.load_state(state)
    return domain


class Model:
    """A trained run: its network, objective and domain, ready to sample."""

    def __init__(self, config: RunConfig, domain: Domain, run: Run, params: Any, step: int, run_dir: Path):
        self.config, self.domain, self.run, self.params, self.step_count, self.run_dir = config, domain, run, params, step, run_dir
        self._sample_fns: dict[float, SampleFn] = {}
        self._network = jax.jit(lambda params, x, t, d, cond: bind(run.graphdef, params)(x, t, d, cond))

    @property
    def objective(self) -> Any:
        return self.run.objective

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "config": as_dict(self.config),
            "step": self.step_count,
            "domain": self.config.domain.name,
            "objective": type(self.objective).__name__,
            "run_dir": str(self.run_dir),
        }

    # -- the network ---------------------------------------------------------------------------
    def velocity(self, x_t: Any, t: Any, d: Any, cond: Any = None) -> jax.Array:
        """The network in model space: the velocity at ``x_t`` and time ``t`` for a step of size ``d``
        (``d = 0``: the instantaneous velocity); ``t`` and ``d`` are scalars or per-example arrays."""
        x_t = jnp.asarray(x_t, jnp.float32)
        b = x_t.shape[0]
        t, d = (jnp.broadcast_to(jnp.asarray(v, jnp.float32), (b,)) for v in (t, d))
        return self._network(self.params, x_t, t, d, self._check_cond(cond, b))

    def step(self, x_t: Any, t: Any, d: Any, cond: Any = None) -> jax.Array:
        """One Euler step of size ``d`` from time ``t``: ``x_t + d * velocity(x_t, t, d)``."""
        x_t = jnp.asarray(x_t, jnp.float32)
        d_arr = jnp.broadcast_to(jnp.asarray(d, jnp.float32), (x_t.shape[0],))
        return x_t + d_arr.reshape((-1,) + (1,) * (x_t.ndim - 1)) * self.velocity(x_t, t, d, cond)

    # -- sampling ------------------------------------------------------------------------------
    def sample_fn(self, cfg_scale: float | None = None) -> SampleFn:
        """The model-space ``SampleFn`` (``shortcutlib.domain.SampleFn``) for a guidance scale."""
        scale = self.config.sample.cfg_scale if cfg_scale is None else float(cfg_scale)
        if scale not in self._sample_fns:
            self._sample_fns[scale] = make_sample_fn(
                self.run.graphdef, self.params, self.objective, tuple(self.domain.sample_shape), cfg_scale=scale, num_classes=self.domain.num_classes
            )
        return self._sample_fns[scale]

    def sample(
        self, num: int, steps: int = 1, cond: Any = None, cfg_scale: float | None = None, seed: int = 0, noise: Any = None, noise_scale: float = 1.0
    ) -> np.ndarray:
        """``num`` samples in data space with ``steps`` Euler steps. ``cond``: class labels (num,) for
        class-conditional models (default: 0, 1, ..., in turn), the domain's conditioning in model space
        otherwise (default ``domain.sample_cond(num, seed)``; robot runs: normalised observation histories);
        ``noise`` (num, *sample_shape) replaces the initial draw; ``seed`` fixes it."""
        num, steps = int(num), int(steps)
        if num < 1 or steps < 1:
            raise ValueError(f"num={num} and steps={steps} must both be at least 1.")
        if cond is None:  # classes in turn; otherwise the domain's own (robot: validation histories)
            classes = self.domain.num_classes
            cond = np.arange(num, dtype=np.int32) % classes if classes > 0 else self.domain.sample_cond(num, seed)
        cond = self._check_cond(cond, num)
        if noise is not None:
            noise = jnp.asarray(noise, jnp.float32)
            expected = (num, *self.domain.sample_shape)
            if noise.shape != expected:
                raise ValueError(f"noise has shape {noise.shape}; expected {expected}.")
        z = self.sample_fn(cfg_scale)(jax.random.PRNGKey(seed), steps, num, cond, noise, noise_scale)
        return self.domain.output(np.asarray(z))

    def _check_cond(self, cond: Any, num: int) -> Any:
        classes = self.domain.num_classes
        if classes <= 0:
            return None if cond is None else jax.tree.map(jnp.asarray, cond)
        if cond is None:
            raise ValueError(f"this model is class-conditional: pass cond, {num} labels in 0..{classes - 1} ({classes}: unconditional).")
        labels = np.asarray(cond)
        if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"cond must be {num} integer class labels, shape ({num},); got shape {labels.shape}, dtype {labels.dtype}.")
        if labels.min() < 0 or labels.max() > classes:
            raise ValueError(f"class labels must be in 0..{classes - 1} ({classes}: unconditional); got {labels.min()}..{labels.max()}.")
        return jnp.asarray(labels, jnp.int32)

    # -- policies ------------------------------------------------------------------------------
    def policy(self, steps: int = 1, noise_scale: float = 1.0, seed: int = 0) -> Any:
        """A closed-loop policy (``reset()``, ``act(observation)``) for domains that act."""
        make = getattr(self.domain, "policy", None)
        if make is None:
            raise ValueError(f"domain {self.config.domain.name} has no policies; policy() is for robot runs.")
        return make(self.sample_fn(), steps=steps, noise_scale=noise_scale, seed=seed)


def load(path: str | Path, step: int | None = None, *, overrides: RunConfig | None = None) -> Model:
    """A run rebuilt from its checkpoint alone (the newest, or ``step``).

    ``overrides`` replaces the mode, eval, sample and logging settings of the saved config (the
    command line's ``mode=eval|sample`` uses this); everything else comes from the checkpoint.
    """
    ckpt_dir = checkpoint_dir(path)
    try:
        meta, step = read_meta(ckpt_dir, step)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at step {step} in {ckpt_dir}.") from None
    try:
        config = resolve(meta["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ConfigError(f"the checkpoint in {ckpt_dir} was written by an incompatible version of shortcutlib ({exc}).") from None
    if overrides is not None:
        config = dataclasses.replace(
            config, mode=overrides.mode, ckpt=overrides.ckpt, eval=overrides.eval, sample=overrides.sample, logging=overrides.logging
        )
    domain = build_domain(config, meta.get("domain") or {})
    run = build_run(config, domain, plan_phases(config, domain)[-1].objective)
    try:
        state, _, step = Checkpointer(ckpt_dir, async_save=False).restore(run.state, step)
    except Exception as exc:  # orbax raises various types for mismatched trees and shapes
        raise ConfigError(
            f"the checkpoint in {ckpt_dir} does not fit the network its config describes (an incompatible version?): "
            f"{' '.join(str(exc).split())[:300]}"
        ) from None
    params = state.ema_params if config.eval.ema else state.params
    return Model(config, domain, run, params, int(step), ckpt_dir.parent)
