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
- ``mode="pairs"``: two-stage reflow. A trained teacher drew the pairs once
  (``shortcutlib.train.phases``); every example of the batch is a stored pair. The loop forwards
  only ``x`` and ``cond``, so the pair's noise travels in ``cond[PAIR_NOISE]`` next to the labels
  (``cond[PAIR_COND]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.common import Targets, VelocityFn, drop_labels, head_then_flow_matching, interpolate
from shortcutlib.objectives.shortcut import assign_levels, bootstrap_size, num_levels
from shortcutlib.sampling import euler_sample

MODES = ("live", "pairs")
PAIR_NOISE = "reflow_noise"
PAIR_COND = "cond"


@dataclass(frozen=True)
class Config:
    mode: str = "live"  # "live" | "pairs" (two-stage)
    reflow_fraction: float = 0.25  # live: share of each batch given reflow targets
    generate_steps: int = 8  # live: Euler steps that draw x_1_hat (reference code: 8)
    generate_ema: bool = True  # live: draw pairs with EMA weights (else live weights)
    generate_cfg_scale: float = 1.0  # live: guidance when drawing conditional pairs
    reflow_d: float | None = None  # step size the pairs are taught at; None: all sizes 1/M ... 1
    M: int = 128
    t_sampling: str = "uniform"  # flow-matching part: "uniform" | "grid"
    class_dropout: float = 0.0
    num_classes: int = 0


CONDITION_ON_D = True


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


def live_targets(key: jax.Array, x1: jax.Array, cond: Any, generator: VelocityFn, cfg: Config) -> Targets:
    """Reflow on the first examples (pairs drawn now by the generator), flow matching on the rest."""
    k_fm, k_noise, k_label, k_line = jax.random.split(key, 4)

    def reflow_head(x1_head: jax.Array, cond_head: Any) -> Targets:
        # Labels are dropped before drawing, so a null-label pair is an unconditional sample.
        cond_re = drop_labels(k_label, cond_head, cfg.class_dropout, cfg.num_classes)
        x0 = jax.random.normal(k_noise, x1_head.shape, x1.dtype)
        x1_hat = euler_sample(
            generator, x0, cfg.generate_steps, cond_re, cfg_scale=cfg.generate_cfg_scale, num_classes=cfg.num_classes, condition_on_d=False
        )
        return straight_targets(k_line, x0, jax.lax.stop_gradient(x1_hat), cond_re, cfg)

    return head_then_flow_matching(
        k_fm,
        x1,
        cond,
        bootstrap_size(x1.shape[0], cfg.reflow_fraction),
        reflow_head,
        t_grid=cfg.M if cfg.t_sampling == "grid" else None,
        class_dropout=cfg.class_dropout,
        num_classes=cfg.num_classes,
    )


def targets(key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, cfg: Config, **_: Any) -> Targets:
    x1, cond = batch["x"], batch.get("cond")
    if cfg.mode == "live":
        return live_targets(key, x1, cond, ema_model if cfg.generate_ema else model, cfg)
    if cfg.mode != "pairs":
        raise ValueError(f"Unknown reflow mode '{cfg.mode}'. Accepted: {', '.join(MODES)}.")
    if not isinstance(cond, dict) or PAIR_NOISE not in cond:
        raise ValueError("Reflow mode=pairs trains on stored noise/sample pairs: run objective=reflow_two_stage, "
                         "which trains a teacher and draws the pairs first.")
    k_label, k_line = jax.random.split(key)
    labels = drop_labels(k_label, cond[PAIR_COND], cfg.class_dropout, cfg.num_classes)
    return straight_targets(k_line, cond[PAIR_NOISE], x1, labels, cfg)
