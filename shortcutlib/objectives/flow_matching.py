"""Plain flow matching: regress the instantaneous velocity at d = 0 (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from shortcutlib.objectives.common import Targets, VelocityFn, flow_matching_part


@dataclass(frozen=True)
class Config:
    t_sampling: str = "uniform"  # "uniform" in [0, 1) or "grid" on {0, 1/M, ...}
    M: int = 128  # grid resolution when t_sampling == "grid"
    class_dropout: float = 0.0
    num_classes: int = 0


# A flow-matching model knows only d = 0: the sampler must not feed it d = 1/n.
CONDITION_ON_D = False


def targets(key: jax.Array, batch: dict[str, Any], model: VelocityFn, ema_model: VelocityFn, cfg: Config, **_: Any) -> Targets:
    return flow_matching_part(
        key,
        batch["x"],
        batch.get("cond"),
        t_grid=cfg.M if cfg.t_sampling == "grid" else None,
        class_dropout=cfg.class_dropout,
        num_classes=cfg.num_classes,
    )
