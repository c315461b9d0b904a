"""Training objectives behind one interface.

Each objective module defines a frozen ``Config`` dataclass and
``targets(key, batch, model, ema_model, cfg, *, step=..., teacher=None) -> Targets``;
module constants tell the sampler how to query the trained model
(``CONDITION_ON_D``: feed d = 1/n, else d = 0; ``NOISE_INIT``: start from noise, else zeros).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

OBJECTIVES = {
    "shortcut": "shortcutlib.objectives.shortcut",
    "flow_matching": "shortcutlib.objectives.flow_matching",
    "bc": "shortcutlib.objectives.bc",
    "consistency": "shortcutlib.objectives.consistency",
    "progressive": "shortcutlib.objectives.progressive",
    "reflow": "shortcutlib.objectives.reflow",
    "meanflow": "shortcutlib.objectives.meanflow",
}


def get_objective(name: str) -> ModuleType:
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective '{name}'. Accepted: {', '.join(sorted(OBJECTIVES))}.")
    return importlib.import_module(OBJECTIVES[name])


def make_config(objective: ModuleType, options: dict[str, Any], context: dict[str, Any] | None = None) -> Any:
    """Build the objective's Config from its options, rejecting unknown keys with a clear message.

    ``context`` holds facts from the domain (``num_classes``, ``class_dropout``); each is used
    only by objectives that have such a field, and an explicit option wins over it.
    """
    fields = {f.name for f in dataclasses.fields(objective.Config)}
    from_context = {k: v for k, v in (context or {}).items() if k in fields}
    values = {k: v for k, v in {**from_context, **options}.items() if k != "name"}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for objective '{objective.__name__.rsplit('.', 1)[-1]}'. "
            f"Accepted: {', '.join(sorted(fields))}."
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return objective.Config(**values)


def condition_on_d(objective: ModuleType) -> bool:
    return getattr(objective, "CONDITION_ON_D", True)


def noise_init(objective: ModuleType) -> bool:
    return getattr(objective, "NOISE_INIT", True)
