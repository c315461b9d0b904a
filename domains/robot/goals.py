"""Hindsight goals for goal-conditioned training windows, as OGBench's GCBC samples them.

A window at step ``i`` of an episode whose last step is ``f`` gets as its goal the observation at

* ``i`` itself with probability ``p_curgoal``;
* a future step of the same episode with probability ``p_trajgoal``: uniform over
  ``min(i + 1, f) .. f`` (OGBench's rounding: ``round(min(i + 1, f) * u + f * (1 - u))``,
  ``u ~ U[0, 1)``), or, with ``geom_sample``, ``min(i + k, f)`` with ``k ~ Geometric(1 - discount)``;
* any training step with probability ``p_randomgoal``.

The defaults are OGBench's GCBC actor (``actor_p_trajgoal=1``, uniform future goals). The
last step of an episode has no future: its goal is itself, as in OGBench.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shortcutlib.config import require


@dataclass
class GoalConfig:
    """Where the goal of a training window comes from (goal-conditioned tasks only)."""

    p_curgoal: float = 0.0  # the window's own current observation
    p_trajgoal: float = 1.0  # a future observation of the same episode
    p_randomgoal: float = 0.0  # an observation of any training episode
    geom_sample: bool = False  # future offsets geometric in discount (else uniform over the rest of the episode)
    discount: float = 0.99  # geom_sample: mean offset 1 / (1 - discount)

    def __post_init__(self) -> None:
        for name in ("p_curgoal", "p_trajgoal", "p_randomgoal"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"goals.{name}", value, "must be in [0, 1].")
        total = self.p_curgoal + self.p_trajgoal + self.p_randomgoal
        require(
            abs(total - 1.0) < 1e-6,
            "goals",
            f"[{self.p_curgoal}, {self.p_trajgoal}, {self.p_randomgoal}]",
            "p_curgoal + p_trajgoal + p_randomgoal must be 1 (OGBench's GCBC: 0, 1, 0).",
        )
        require(0.0 < self.discount < 1.0, "goals.discount", self.discount, "must be in (0, 1).")


def sample_goals(rng: np.random.Generator, current: np.ndarray, final: np.ndarray, num_steps: int, config: GoalConfig) -> np.ndarray:
    """Goal step indices for windows at steps ``current`` whose episodes end at steps ``final``
    (inclusive); random goals are drawn from ``0 .. num_steps - 1``."""
    current = np.asarray(current, np.int64)
    final = np.asarray(final, np.int64)
    n = len(current)
    if config.p_curgoal == 1.0:
        return current.copy()
    if config.geom_sample:
        traj = np.minimum(current + rng.geometric(1.0 - config.discount, n), final)
    else:
        u = rng.random(n)
        traj = np.round(np.minimum(current + 1, final) * u + final * (1.0 - u)).astype(np.int64)
    random = rng.integers(0, num_steps, n)
    goals = np.where(rng.random(n) < config.p_trajgoal / (1.0 - config.p_curgoal), traj, random)
    return np.where(rng.random(n) < config.p_curgoal, current, goals)
