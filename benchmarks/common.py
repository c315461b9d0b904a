"""Helpers shared by benchmark scripts: the machine, configs, markdown tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.machine import describe_machine as machine_description  # noqa: F401  (re-exported)
from shortcutlib.config import compose_config  # noqa: F401  (re-exported)


def fmt(value: float, digits: int = 3) -> str:
    if value != value:  # nan
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys (``{"objective.name": ...}``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def same_settings(stored: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> bool:
    """Whether a stored result was made with the current settings (dicts of the same shape). A
    setting added to the library after the result was stored counts as equal at its default, since
    a new setting's default keeps the earlier behaviour (``adaptive_p = 0``: no adaptive weight)."""
    if stored == current:
        return True
    if any(key not in current or current[key] != value for key, value in stored.items()):
        return False
    return all(key in defaults and current[key] == defaults[key] for key in current.keys() - stored.keys())
