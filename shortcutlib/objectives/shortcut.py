"""The shortcut objective (Frans et al., ICLR 2025): flow matching at d = 0 plus self-consistency.

One step of size 2d must equal two steps of size d:

    s(x_t, t, 2d) = ( s(x_t, t, d) + s(x_t + d s(x_t, t, d), t + d, d) ) / 2

Trained sizes are ``{1/M, ..., 1/2, 1}``; the finest size 1/M is bootstrapped from Heun's step
of the flow-matching (d = 0) velocity, so every size down to the instantaneous velocity is tied
together and any budget ``n`` can be sampled with ``d = 1/n``.

Differences from the public reference code, each deliberate (tests cover them):
- d is a continuous input and d = 0 is flow matching (the reference feeds log2 indices and
  uses d = 1/128 for flow matching);
- bootstrap examples are spread over all sizes by stratified allocation with a random offset,
  so every size is trained at any batch size, a size whose share is below one example once
  every few steps (the reference gives ``batch // 8 // 7`` examples per size, 0 at batch
  32, leaving only d = 1 trained);
- the coarse sizes get more examples (share of size 2^-j ~ ``level_decay``^j, 0.5 by
  default: half on d = 1), like the reference's ``bootstrap_dt_bias``: the coarse sizes
  are the hardest to fit and inherit the errors of every finer size below them;
- the flow-matching part takes the whole batch and the bootstrap rows come on top of it, with
  their own noise, times and keys (``flow_rows="all"``; the reference splits the batch, uses the
  first eighth twice and the last eighth never, with shared keys): the d = 0 velocity, which
  serves every budget from ``flow_budget`` steps on, then sees as many examples per step as flow
  matching's. On digits (ten seeds) that put every budget at or below flow matching's and below
  the split batch's from 2 steps on, and on Fashion-MNIST (three seeds) within seed noise of flow
  matching from 16 steps on, for about ``1 + bootstrap_fraction`` times the step compute
  (``benchmarks/results/paper_table_digits_ten_seeds.md``, ``fmnist_three_seeds.md``,
  ``fmnist_variants.md``); ``flow_rows="rest"`` splits the batch instead;
- the finest size is Heun's step on the d = 0 velocity at times of the flow-matching grid (the
  reference: two Euler steps of its flow-matching level, whose d it feeds as 1/128);
- an eighth of each batch goes to self-consistency (the reference code's share; the paper
  text says a quarter; a sixteenth is cheaper and better from 2 steps on the ring and digits
  but worse at few steps on Fashion-MNIST, ``benchmarks/results/*bootstrap_share.md``), and
  budgets of ``flow_budget`` (16) steps or more are served by the d = 0 velocity (the reference
  does so at 128): from 16 steps on, Euler on the d = 0 velocity beat the d = 1/n queries on
  digits and Fashion-MNIST (``benchmarks/results/paper_table_digits.md``).
A domain may set other defaults for this objective where they were measured there
(``configs/domain_objective/<domain>_shortcut.yaml``): on digits and Fashion-MNIST, MeanFlow's
adaptive weight at p = 1/2 (a pseudo-Huber loss) on the d = 0 rows, which helps both this objective
and flow matching on images but fits a median, not the exact flow's mean velocity, on the 2-D ring
(``benchmarks/results/*pseudo_huber*.md``); on Fashion-MNIST four times the loss weight on the
self-consistency rows (``bootstrap_weight``, ``benchmarks/results/fmnist_bootstrap_weight.md``); on the
2-D mixtures a sixteenth of the batch for self-consistency
(``benchmarks/results/paper_table_toy2d_sixteenth_ten_seeds.md``) and the batch's plug-in marginal
velocity as the target of every d = 0 row (``plug_in_fraction``, ESC's; a lower-variance target for the
velocity every size is bootstrapped from, ``benchmarks/results/paper_table_toy2d_plug_in.md``).
``flow_warmup`` (a curriculum from flow matching, as in AlphaFlow: the self-consistency rows join after that
share of the steps, which cost what flow matching's do) is no domain's default: a half was lower from 2 steps
on with the digits MLP, but the rest of the run was too short for the one-step size on the ring, the digits DiT
and Fashion-MNIST (``benchmarks/results/*flow_warmup.md``).
The other defaults were chosen one at a time on the 2-D ring over three seeds; ``benchmarks/sweep.py``
reruns such a comparison (its docstring has the command) and the paper tables
(``benchmarks/results/paper_table_*.md``) set them against the paper's settings at every budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from shortcutlib.config import ComponentConfig, require, require_choice
from shortcutlib.objectives.base import (
    Objective,
    Targets,
    require_adaptive_weight,
    require_plug_in,
)
from shortcutlib.objectives.common import (
    broadcast_to_x,
    drop_labels,
    head_then_flow_matching,
    interpolate,
    logit_normal_params,
    maybe_clip,
    take,
    two_step_velocity,
)
from shortcutlib.velocity import VelocityFn, null_cond


@dataclass
class Config(ComponentConfig):
    bootstrap_fraction: float = 0.125  # share of each batch spent on self-consistency (paper 1/4, reference code 1/8)
    M: int = 128  # finest budget; trained sizes 1/M ... 1
    flow_grid: Optional[int] = None  # with t_sampling="grid", d = 0 rows at t on multiples of 1/flow_grid
    # (null: 1/M); a multiple of M keeps the finest size's Heun query on times the d = 0 rows train
    bootstrap_weight: float = 1.0  # loss weight of a self-consistency row relative to a d = 0 row: more of the
    # gradient on the shortcut sizes without more examples (the share sets the examples, and so the compute)
    bootstrap_weight_sizes: Optional[int] = None  # the coarsest sizes (1, 1/2, ...) that take bootstrap_weight, the
    # finer ones weigh 1; 1: only the one-step size; null: every size
    level_decay: float = 0.5  # bootstrap share of size 2^-j ~ level_decay^j; 1 = equal shares
    bootstrap_ema: bool = False  # targets from EMA weights (the paper), else live weights with stop-gradient
    clip_intermediate: Optional[float] = None  # clip x_{t+d} inside the bootstrap (reference: 4)
    clip_target: Optional[float] = None  # clip the bootstrap target (reference: 4)
    t_sampling: str = "grid"  # "grid": t on multiples of the target size (and 1/M for d = 0); "uniform";
    # "logit_normal": flow-matching rows logit-normal (logit_mean, logit_std), bootstrap rows uniform
    logit_mean: float = 0.4
    logit_std: float = 1.0
    bootstrap_cfg_scale: float = 1.0  # CFG baked into the finest bootstrap targets; 1 = none
    flow_rows: str = "all"  # examples of the flow-matching (d = 0) part: "all", the whole batch, the bootstrap
    # rows on top of it (as many d = 0 examples as flow matching's; about 1 + bootstrap_fraction times its compute);
    # "rest", those the bootstrap part leaves (a step costs about as much as flow matching's)
    flow_budget: Optional[int] = 16  # budgets of at least this many steps query d = 0 (plain Euler on the
    # instantaneous velocity, trained on every flow-matching row) instead of the fine sizes, which the
    # coarse-biased shares train least; the reference does so at 128; null: d = 1/n always
    adaptive_p: float = 0.0  # MeanFlow's adaptive loss weight power (base.adaptive_loss); 0: squared error
    adaptive_c: float = 0.01
    adaptive_rows: str = "flow"  # "flow": per-example weights on the d = 0 rows only, the bootstrap rows share
    # their mean weight (their targets are the model's own, so their errors can shrink without fitting the data,
    # and a per-example weight up-weights exactly those rows); "all": per-example weights on every row
    plug_in_fraction: float = 0.0  # share of the d = 0 rows regressing the batch's plug-in marginal velocity
    # (ESC's, common.velocity_target): a lower-variance target for the velocity every size is bootstrapped from
    class_consistent: bool = True  # the plug-in's posterior over data of the example's own class
    flow_warmup: float = 0.0  # share of the phase's steps that train the d = 0 rows alone before the self-consistency
    # rows join (a curriculum from flow matching, as AlphaFlow's; those steps cost what flow matching's do)

    def __post_init__(self) -> None:
        require(0.0 <= self.bootstrap_fraction <= 1.0, "bootstrap_fraction", self.bootstrap_fraction, "must be in [0, 1].")
        require(self.bootstrap_weight > 0, "bootstrap_weight", self.bootstrap_weight, "must be positive; 1 weighs every row alike.")
        require(self.bootstrap_weight_sizes is None or self.bootstrap_weight_sizes >= 1, "bootstrap_weight_sizes",
                self.bootstrap_weight_sizes, "must be at least 1 (1: only the one-step size), or null for every size.")
        require(self.level_decay > 0, "level_decay", self.level_decay, "must be positive; 1 spreads examples equally.")
        require(self.M >= 1 and math.log2(self.M).is_integer(), "M", self.M, "must be a power of two, e.g. 128.")
        require(self.flow_grid is None or (self.flow_grid >= self.M and self.flow_grid % self.M == 0), "flow_grid",
                self.flow_grid, f"must be a multiple of M ({self.M}), e.g. 128, or null for M.")
        require_choice("t_sampling", self.t_sampling, ("grid", "uniform", "logit_normal"))
        require_choice("flow_rows", self.flow_rows, ("rest", "all"))
        require(self.flow_budget is None or self.flow_budget >= 1, "flow_budget", self.flow_budget, "must be at least 1, or null.")
        require_adaptive_weight(self)
        require_choice("adaptive_rows", self.adaptive_rows, ("flow", "all"))
        require_plug_in(self)
        require(0.0 <= self.flow_warmup < 1.0, "flow_warmup", self.flow_warmup,
                "must be in [0, 1): the share of training steps before the self-consistency rows join (0: none).")


def num_levels(M: int) -> int:
    """Number of trained shortcut sizes: 1, 1/2, ..., 1/M."""
    log2_m = math.log2(M)
    if M < 1 or log2_m != int(log2_m):
        raise ValueError(f"M must be a power of two (got {M}); use e.g. 128.")
    return int(log2_m) + 1


def bootstrap_size(batch: int, fraction: float) -> int:
    return int(min(max(round(batch * fraction), 0), batch))


def level_shares(levels: int, decay: float = 1.0) -> np.ndarray:
    """Share of the bootstrap examples for each level j (size 2^-j), proportional to decay^j."""
    if decay <= 0:
        raise ValueError(f"level_decay must be positive (got {decay}); 1 spreads examples equally.")
    weights = decay ** np.arange(levels, dtype=np.float64)
    return weights / weights.sum()


def assign_levels(key: jax.Array, n: int, levels: int, decay: float = 1.0) -> jax.Array:
    """Stratified allocation of n examples to levels 0..levels-1 with a random offset.

    Level j gets floor or ceil of ``n * share_j`` examples in every batch (see ``level_shares``),
    and the random offset rotates the remainder across steps, so small batches still train
    every size over a few steps.
    """
    upper = jnp.asarray(np.cumsum(level_shares(levels, decay))[:-1], jnp.float32)
    position = (jnp.arange(n) + jax.random.uniform(key, ())) / n
    return jnp.searchsorted(upper, position, side="right")


def guided_rows(n: int, levels: int, decay: float) -> int:
    """An upper bound on the examples of the finest level among ``n`` (they come last, see
    ``assign_levels``): the rows that need a guided teacher when guidance is baked in."""
    return min(n, math.ceil(n * level_shares(levels, decay)[-1] - 1e-9))


def bootstrap_weights(level: jax.Array, weight: float, sizes: Optional[int]) -> jax.Array:
    """Loss weight of each bootstrap row from its level j (size 2^-j): ``weight`` on the ``sizes`` coarsest, 1 below."""
    if sizes is None:
        return jnp.full(level.shape, weight)
    return jnp.where(level < sizes, weight, 1.0)


def bootstrap_part(
    key: jax.Array, x1: jax.Array, cond: Any, teacher: VelocityFn, cfg: Config, *, class_dropout: float = 0.0, num_classes: int = 0
) -> Targets:
    """Self-consistency targets for sizes 2^-j from the (stop-gradient) teacher.

    A size d > 1/M is two Euler steps of size d/2 of the teacher's d/2 shortcut. The finest size
    1/M is Heun's step of size 1/M on the instantaneous velocity (d = 0): its second query,
    t + 1/M, lies on the grid where the flow-matching part trains t, and it is a second-order
    estimate of the average velocity (two Euler half steps would query t + 1/2M, a time the d = 0
    level never sees, and be first order). Guidance baked into the targets applies to the
    finest size only (the coarser ones inherit it), so only the finest rows get a null-label pass.
    """
    k_level, k_t, k_noise, k_label = jax.random.split(key, 4)
    b = x1.shape[0]
    levels = num_levels(cfg.M)
    level = assign_levels(k_level, b, levels, cfg.level_decay)
    d_target = jnp.exp2(-level.astype(x1.dtype))
    finest = level == levels - 1
    d_query = jnp.where(finest, 0.0, d_target / 2)
    step = jnp.where(finest, d_target, d_target / 2)

    u = jax.random.uniform(k_t, (b,))
    if cfg.t_sampling == "grid":
        t = jnp.floor(u / d_target) * d_target  # multiples of the target size, t + d_target <= 1
    else:
        t = u * (1.0 - d_target)
    x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
    x_t = interpolate(x0, x1, t)
    cond = drop_labels(k_label, cond, class_dropout, num_classes)
    guided = 0 if cfg.bootstrap_cfg_scale == 1.0 or num_classes <= 0 or cond is None else guided_rows(b, levels, cfg.level_decay)

    def velocity(x: jax.Array, tt: jax.Array) -> jax.Array:
        v = teacher(x, tt, d_query, cond)
        if guided == 0:
            return v
        tail = slice(b - guided, None)
        v_cond = v[tail]
        v_uncond = teacher(x[tail], tt[tail], d_query[tail], null_cond(take(cond, tail), num_classes))
        v_guided = v_uncond + cfg.bootstrap_cfg_scale * (v_cond - v_uncond)
        return v.at[tail].set(jnp.where(broadcast_to_x(finest[tail], v_cond), v_guided, v_cond))

    v_target = maybe_clip(two_step_velocity(velocity, x_t, t, step, cfg.clip_intermediate), cfg.clip_target)
    return Targets(
        x_t=x_t,
        t=t,
        d=d_target,
        cond=cond,
        v_target=jax.lax.stop_gradient(v_target),
        weight=bootstrap_weights(level, cfg.bootstrap_weight, cfg.bootstrap_weight_sizes).astype(x1.dtype),
    )


class Shortcut(Objective):
    Config = Config

    def adaptive_shared_rows(self, targets: Targets) -> Optional[jax.Array]:
        """With ``adaptive_rows="flow"`` the bootstrap rows (d > 0) share the d = 0 rows' mean weight."""
        return targets.d > 0 if self.config.adaptive_rows == "flow" else None

    def targets(self, key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, **_: Any) -> Targets:
        """Bootstrap targets on the first examples; flow matching on the rest (disjoint), or with
        ``flow_rows="all"`` on the whole batch, the bootstrap rows added on top with their own noise and times."""
        cfg = self.config
        x1, cond = batch["x"], batch.get("cond")
        k_fm, k_boot = jax.random.split(key)
        teacher = ema_model if cfg.bootstrap_ema else model
        return head_then_flow_matching(
            k_fm,
            x1,
            cond,
            bootstrap_size(x1.shape[0], cfg.bootstrap_fraction),
            lambda x1_head, cond_head: bootstrap_part(
                k_boot, x1_head, cond_head, teacher, cfg, class_dropout=self.class_dropout, num_classes=self.num_classes
            ),
            t_grid=(cfg.flow_grid or cfg.M) if cfg.t_sampling == "grid" else None,
            class_dropout=self.class_dropout,
            num_classes=self.num_classes,
            logit_normal_params=logit_normal_params(cfg),
            flow_rows=cfg.flow_rows,
            plug_in_fraction=cfg.plug_in_fraction,
            class_consistent=cfg.class_consistent,
        )

    def stages(self) -> list[tuple[int, Objective]]:
        """With ``flow_warmup``, the first steps train the d = 0 rows alone, on the whole batch (with ``flow_rows="all"``
        the very rows, times, keys and loss of the later steps, without the self-consistency rows or their teacher
        queries); the rest train every row."""
        start = round(self.config.flow_warmup * self.context.total_steps)
        if start <= 0:
            return [(0, self)]
        warmup = type(self)(dataclasses.replace(self.config, bootstrap_fraction=0.0, flow_warmup=0.0), self.context)
        return [(0, warmup), (start, self)]

    def query_sizes(self, num_steps: int) -> np.ndarray:
        """``d = 1/n`` for every step of a budget of n, or ``d = 0`` from ``flow_budget`` steps on.
        Any n works: d is continuous, so budgets between the trained sizes interpolate them."""
        budget = self.config.flow_budget
        if budget is not None and num_steps >= budget:
            return np.zeros(num_steps)
        return np.full(num_steps, 1.0 / num_steps)

    @property
    def baked_guidance(self) -> float:
        return self.config.bootstrap_cfg_scale
