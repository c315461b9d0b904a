"""Math every objective shares: interpolation, time sampling, label dropout, the two-step velocity.

Conventions (see DESIGN.md): time runs from noise to data,
``x_t = (1 - t) x_0 + t x_1`` with ``x_0 ~ N(0, I)`` and data ``x_1``; the velocity is
``x_1 - x_0``; ``d`` is a continuous step size and ``d = 0`` is the instantaneous velocity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from shortcutlib.objectives.base import Targets


def broadcast_to_x(s: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape a per-example scalar (B,) so it broadcasts against x (B, ...)."""
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def interpolate(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
    """The straight path from noise x0 (t=0) to data x1 (t=1)."""
    tb = broadcast_to_x(t, x1)
    return (1.0 - tb) * x0 + tb * x1


def logit_normal(key: jax.Array, shape: tuple[int, ...], mean: float, std: float) -> jax.Array:
    """``sigmoid(mean + std * N(0, 1))``: times that favour the middle of the path (SD3, MeanFlow)."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, shape))


def logit_normal_params(cfg: Any) -> tuple[float, float] | None:
    """``(logit_mean, logit_std)`` of a config whose ``t_sampling`` is "logit_normal", else None."""
    return (cfg.logit_mean, cfg.logit_std) if cfg.t_sampling == "logit_normal" else None


def sample_t(
    key: jax.Array,
    batch: int,
    *,
    grid: int | None = None,
    t_max: jax.Array | float = 1.0,
    logit_normal_params: tuple[float, float] | None = None,
) -> jax.Array:
    """Times in [0, t_max): uniform, on the grid {0, 1/grid, ...} when ``grid`` is set, or
    logit-normal ``(mean, std)`` scaled to [0, t_max) when ``logit_normal_params`` is set.

    ``t_max`` may be per-example (B,). On a grid the last point is t_max - 1/grid.
    """
    if logit_normal_params is not None:
        if grid is not None:
            raise ValueError("sample_t: choose a grid or logit-normal times, not both.")
        return logit_normal(key, (batch,), *logit_normal_params) * t_max
    u = jax.random.uniform(key, (batch,))
    if grid is None:
        return u * t_max
    n_points = jnp.maximum(jnp.round(jnp.asarray(t_max) * grid), 1.0)
    return jnp.floor(u * n_points) / grid


def plug_in_velocity(z: jax.Array, t: jax.Array, x1: jax.Array, same: jax.Array | None = None, floor: float = 1e-3) -> jax.Array:
    """The marginal velocity of the empirical distribution of ``x1`` (the batch) at ``z``, time ``t``
    (ESC's plug-in velocity): ``sum_i w_i (x_1^i - z) / (1 - t)``, ``w_i`` the posterior of datum i
    given z on the straight path, proportional to ``exp(-|z - t x_1^i|^2 / (2 (1 - t)^2))``.

    ``same`` (B, B) masks which data each example may come from (its class); None: all.
    """
    b = z.shape[0]
    remaining = jnp.maximum(1.0 - t, floor)
    flat_z, flat_x = z.reshape(b, -1), x1.reshape(b, -1)
    # |z_j - t_j x_i|^2 for every example j and datum i, without materialising (B, B, D).
    sq = (jnp.sum(flat_z**2, 1)[:, None] - 2 * t[:, None] * flat_z @ flat_x.T + (t**2)[:, None] * jnp.sum(flat_x**2, 1)[None, :])
    logits = -sq / (2 * remaining[:, None] ** 2)
    if same is not None:
        logits = jnp.where(same, logits, -jnp.inf)
    w = jax.nn.softmax(logits, axis=1)
    return ((w @ flat_x - flat_z) / remaining[:, None]).reshape(z.shape)


def velocity_target(
    key: jax.Array, z: jax.Array, t: jax.Array, x0: jax.Array, x1: jax.Array, cond: Any, *, plug_in_fraction: float,
    class_consistent: bool, num_classes: int
) -> jax.Array:
    """The conditional velocity ``x_1 - x_0``, or on a share ``plug_in_fraction`` of the examples the
    plug-in velocity (``plug_in_velocity``), a lower-variance estimate of the same regression target,
    the marginal velocity. With ``class_consistent`` and class labels, each example's posterior runs
    over the data of its own class (ESC draws single-class batches instead)."""
    conditional = x1 - x0
    if plug_in_fraction <= 0.0:
        return conditional
    same = None
    if class_consistent and num_classes > 0 and cond is not None:
        labels = jax.tree.leaves(cond)[0]
        same = labels[:, None] == labels[None, :]
    plugged = jax.random.uniform(key, t.shape) < plug_in_fraction
    return jnp.where(broadcast_to_x(plugged, x1), plug_in_velocity(z, t, x1, same), conditional)


def drop_labels(key: jax.Array, cond: Any, prob: float, num_classes: int) -> Any:
    """Replace class labels by the null token ``num_classes`` with probability ``prob``.

    Only integer leaves (class labels) are dropped; observation arrays pass through.
    """
    if prob <= 0.0 or num_classes <= 0 or cond is None:
        return cond

    def drop(leaf: jax.Array) -> jax.Array:
        if not jnp.issubdtype(leaf.dtype, jnp.integer):
            return leaf
        mask = jax.random.bernoulli(key, prob, leaf.shape)
        return jnp.where(mask, num_classes, leaf)

    return jax.tree.map(drop, cond)


def two_step_velocity(
    velocity: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, t: jax.Array, h: jax.Array, clip: float | None = None
) -> jax.Array:
    """The average velocity of two consecutive Euler steps of size h, (x_{t+2h} - x_t) / 2h; it is
    also Heun's velocity for one step of size h. ``clip`` bounds the intermediate point."""
    v1 = velocity(x, t)
    x_mid = maybe_clip(x + broadcast_to_x(h, x) * v1, clip)
    return (v1 + velocity(x_mid, t + h)) / 2


def take(tree: Any, idx: slice | jax.Array) -> Any:
    """Index the leading axis of every leaf of a pytree (None stays None)."""
    return jax.tree.map(lambda a: a[idx], tree)


def concat(trees: list[Any]) -> Any:
    """Concatenate pytrees of the same structure along the leading axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


def maybe_clip(x: jax.Array, bound: float | None) -> jax.Array:
    return x if bound is None else jnp.clip(x, -bound, bound)


def flow_matching_part(
    key: jax.Array,
    x1: jax.Array,
    cond: Any,
    *,
    t_grid: int | None,
    class_dropout: float,
    num_classes: int,
    logit_normal_params: tuple[float, float] | None = None,
    plug_in_fraction: float = 0.0,
    class_consistent: bool = True,
) -> Targets:
    """Flow matching targets at d = 0 for a batch of data: the baseline and the shortcut base case.
    Times as in ``sample_t``; the velocity as in ``velocity_target``."""
    k_t, k_noise, k_label = jax.random.split(key, 3)
    b = x1.shape[0]
    t = sample_t(k_t, b, grid=t_grid, logit_normal_params=logit_normal_params)
    x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
    x_t = interpolate(x0, x1, t)
    # A key folded from the parent: without the plug-in, every other draw is what it was before the option existed.
    v_target = velocity_target(jax.random.fold_in(key, 3), x_t, t, x0, x1, cond, plug_in_fraction=plug_in_fraction,
                               class_consistent=class_consistent, num_classes=num_classes)
    return Targets(
        x_t=x_t,
        t=t,
        d=jnp.zeros((b,), x1.dtype),
        cond=drop_labels(k_label, cond, class_dropout, num_classes),
        v_target=v_target,
        weight=jnp.ones((b,), x1.dtype),
    )


def head_then_flow_matching(
    fm_key: jax.Array,
    x1: jax.Array,
    cond: Any,
    n_head: int,
    head: Callable[[jax.Array, Any], Targets],
    *,
    t_grid: int | None,
    class_dropout: float,
    num_classes: int,
    logit_normal_params: tuple[float, float] | None = None,
    flow_rows: str = "rest",
    plug_in_fraction: float = 0.0,
    class_consistent: bool = True,
) -> Targets:
    """``head(x1[:n_head], cond[:n_head])`` on the first examples, then flow matching at d = 0 on
    the rest (``flow_rows="rest"``: disjoint parts that together cover the batch; shortcut
    bootstrap, live reflow) or on the whole batch (``"all"``: the head's rows come on top)."""
    b = x1.shape[0]
    start = n_head if flow_rows == "rest" else 0
    parts = []
    if n_head > 0:
        parts.append(head(x1[:n_head], take(cond, slice(0, n_head))))
    if start < b:
        parts.append(
            flow_matching_part(
                fm_key,
                x1[start:],
                take(cond, slice(start, None)),
                t_grid=t_grid,
                class_dropout=class_dropout,
                num_classes=num_classes,
                logit_normal_params=logit_normal_params,
                plug_in_fraction=plug_in_fraction,
                class_consistent=class_consistent,
            )
        )
    return parts[0] if len(parts) == 1 else Targets(*concat([list(p) for p in parts]))
