"""Reflow (Liu et al., 2023): regress straight lines between noise and the model's own samples.

A pair ``(x_0, x_1_hat)``, with ``x_1_hat`` the sample a flow model draws from noise ``x_0``,
defines a straight path ``x_t = (1 - t) x_0 + t x_1_hat`` whose velocity ``x_1_hat - x_0`` is the
same at every t and for every step size, so the pair is taught at a step size ``d > 0``
(the trained sizes ``{1/M, ..., 1}``, round-robin as in the shortcut objective, or one fixed
``reflow_d``) and the sampler feeds ``d = 1/n``.

- ``mode="live"``: one model, trained from scratch. A share ``reflow_fraction`` of each batch
  gets pairs drawn on the fly by the model itself (EMA weights by default) in
  ``generate_steps`` Euler steps of its instantaneous velocity (d = 0); the rest of the batch is
  flow matching at d = 0, which keeps the generator improving.
- ``mode="pairs"``: two-stage reflow. ``phases`` trains a flow-matching teacher, which then
  draws the pairs once (``<run_dir>/pairs.npz``, see ``draw_pairs``); every example of the
  student's batch is a stored pair. The loop forwards only ``x`` and ``cond``, so the pair's
  noise travels in ``cond[PAIR_NOISE]`` next to the labels (``cond[PAIR_COND]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shortcutlib.config import ComponentConfig, require, require_choice
from shortcutlib.domain import Batch, Domain, IdentityCodec, infinite_batches
from shortcutlib.objectives.base import (
    Objective,
    Phase,
    Targets,
    Teacher,
    teacher_then_students,
)
from shortcutlib.objectives.common import (
    drop_labels,
    head_then_flow_matching,
    interpolate,
)
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.objectives.shortcut import assign_levels, bootstrap_size, num_levels
from shortcutlib.sampling import euler_sample
from shortcutlib.velocity import VelocityFn

MODES = ("live", "pairs")
PAIR_NOISE = "reflow_noise"
PAIR_COND = "cond"


@dataclass
class Config(ComponentConfig):
    mode: str = "live"  # "live" | "pairs" (two-stage)
    reflow_fraction: float = 0.25  # live: share of each batch given reflow targets
    generate_steps: int = 8  # live: Euler steps that draw x_1_hat (reference code: 8)
    generate_ema: bool = True  # live: draw pairs with EMA weights (else live weights)
    generate_cfg_scale: float = 1.0  # live: guidance when drawing conditional pairs
    reflow_d: Optional[float] = None  # step size the pairs are taught at; None: all sizes 1/M ... 1
    M: int = 128
    t_sampling: str = "uniform"  # flow-matching part: "uniform" | "grid"
    teacher_fraction: float = 0.5  # pairs: share of train.steps for the teacher
    init_student: bool = True  # pairs: the student starts from the teacher (Liu et al.)
    pairs: int = 20_000  # pairs: number of (noise, sample) pairs
    pair_steps: int = 128  # pairs: Euler steps the teacher draws each pair with
    pair_batch: int = 2048  # pairs: pairs drawn per call
    pair_cfg_scale: float = 1.0  # pairs: guidance when drawing conditional pairs

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)
        require_choice("t_sampling", self.t_sampling, ("uniform", "grid"))
        require(self.pairs >= 1 and self.pair_batch >= 1, "pairs", self.pairs, "pairs and pair_batch must be at least 1.")


def pack_pairs(noise: Any, cond: Any) -> dict[str, Any]:
    """The ``cond`` a stored pair travels in: its noise and its labels (or None)."""
    return {PAIR_NOISE: noise, PAIR_COND: cond}


def straight_targets(key: jax.Array, x0: jax.Array, x1: jax.Array, cond: Any, cfg: Config) -> Targets:
    """Regress the straight velocity x1 - x0 at a uniform t in [0, 1 - d], for step sizes d."""
    k_level, k_t = jax.random.split(key)
    b = x1.shape[0]
    if cfg.reflow_d is None:
        d = jnp.exp2(-assign_levels(k_level, b, num_levels(cfg.M)).astype(x1.dtype))
    else:
        d = jnp.full((b,), cfg.reflow_d, x1.dtype)
    t = jax.random.uniform(k_t, (b,), x1.dtype) * (1.0 - d)
    return Targets(
        x_t=interpolate(x0, x1, t),
        t=t,
        d=d,
        cond=cond,
        v_target=jax.lax.stop_gradient(x1 - x0),
        weight=jnp.ones((b,), x1.dtype),
    )


class Reflow(Objective):
    Config = Config

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        if cfg.mode == "live":
            return self.live_targets(key, x1, cond, ema_model if cfg.generate_ema else model)
        if not isinstance(cond, dict) or PAIR_NOISE not in cond:
            raise ValueError("Reflow mode=pairs trains on stored noise/sample pairs: its phases train a teacher and draw them first.")
        k_label, k_line = jax.random.split(key)
        labels = drop_labels(k_label, cond[PAIR_COND], self.class_dropout, self.num_classes)
        return straight_targets(k_line, cond[PAIR_NOISE], x1, labels, cfg)

    def live_targets(self, key: jax.Array, x1: jax.Array, cond: Any, generator: VelocityFn) -> Targets:
        """Reflow on the first examples (pairs drawn now by the generator), flow matching on the rest."""
        cfg = self.config
        k_fm, k_noise, k_label, k_line = jax.random.split(key, 4)
        plan = FlowMatching().sample_plan(cfg.generate_steps, cfg.generate_cfg_scale)

        def reflow_head(x1_head: jax.Array, cond_head: Any) -> Targets:
            # Labels are dropped before drawing, so a null-label pair is an unconditional sample.
            cond_re = drop_labels(k_label, cond_head, self.class_dropout, self.num_classes)
            x0 = jax.random.normal(k_noise, x1_head.shape, x1.dtype)
            x1_hat = euler_sample(generator, x0, plan, cond_re, num_classes=self.num_classes)
            return straight_targets(k_line, x0, jax.lax.stop_gradient(x1_hat), cond_re, cfg)

        return head_then_flow_matching(
            k_fm,
            x1,
            cond,
            bootstrap_size(x1.shape[0], cfg.reflow_fraction),
            reflow_head,
            t_grid=cfg.M if cfg.t_sampling == "grid" else None,
            class_dropout=self.class_dropout,
            num_classes=self.num_classes,
        )

    def phases(self, total_steps: int) -> list[Phase]:
        if self.config.mode == "live":
            return super().phases(total_steps)
        return teacher_then_students(
            total_steps,
            self.config.teacher_fraction,
            FlowMatching(context=self.context),
            [self],
            init_from_teacher=self.config.init_student,
            prepare_data=self.draw_pairs,
        )

    def draw_pairs(self, domain: Domain, teacher: Teacher, run_dir: Path, seed: int) -> PairedDomain:
        """The teacher's samples from ``pairs`` noise draws, cached at ``run_dir/pairs.npz``."""
        from shortcutlib.inference import make_sample_fn

        cfg = self.config
        path = Path(run_dir) / "pairs.npz"
        if path.exists():
            data = np.load(path)
            return PairedDomain(domain, data["noise"], data["samples"], data["cond"] if "cond" in data.files else None)
        sample_fn = make_sample_fn(
            teacher.graphdef, teacher.params, teacher.objective, tuple(domain.sample_shape), cfg_scale=cfg.pair_cfg_scale, num_classes=domain.num_classes
        )
        chunk = min(cfg.pair_batch, cfg.pairs)
        total = chunk * math.ceil(cfg.pairs / chunk)  # equal chunks: one compilation
        cond = domain.sample_cond(total, seed)
        cond = None if cond is None else np.asarray(cond)
        key = jax.random.PRNGKey(seed + 1)
        noise, samples = [], []
        for start in range(0, total, chunk):
            k = jax.random.fold_in(key, start)
            x0 = jax.random.normal(k, (chunk, *domain.sample_shape))
            c = None if cond is None else cond[start : start + chunk]
            samples.append(np.asarray(sample_fn(k, cfg.pair_steps, chunk, c, x0)))
            noise.append(np.asarray(x0))
        arrays = {"noise": np.concatenate(noise), "samples": np.concatenate(samples)}
        if cond is not None:
            arrays["cond"] = cond
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return PairedDomain(domain, arrays["noise"], arrays["samples"], cond)


class PairedDomain:
    """Training data made of stored (noise, sample) pairs in model space; the rest is the base domain's.

    The pair's noise travels in ``cond`` (see ``pack_pairs``).
    """

    def __init__(self, base: Domain, noise: np.ndarray, samples: np.ndarray, cond: np.ndarray | None):
        self.base = base
        self.name = base.name
        self.codec = IdentityCodec()  # pairs are already in model space
        self.sample_shape = tuple(base.sample_shape)
        self.num_classes = base.num_classes
        self.noise, self.samples, self.cond = noise, samples, cond

    def train_data(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[Batch]:
        return infinite_batches({"x": self.samples, "cond": pack_pairs(self.noise, self.cond)}, batch_size, seed, start_batch)

    def make_backbone(self, model_config: Any, rngs: nnx.Rngs) -> nnx.Module:
        return self.base.make_backbone(model_config, rngs)

    def state(self) -> dict[str, Any]:
        return self.base.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.base.load_state(state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
