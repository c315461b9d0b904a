"""Scripted experts that generate demonstrations, one module per task family.

An expert acts on the environment's own observation and info (not the flat policy
observation) because some experts need privileged state; the flat vector that
policies see is made from the same observation by ``TaskSpec.obs_fn``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        """Start a new episode from the observation and info returned by ``env.reset``."""
        ...

    def act(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        """The action for the current observation and info (from the last reset or step)."""
        ...
