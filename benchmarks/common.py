"""Helpers shared by benchmark scripts: the machine, configs, markdown tables."""

from __future__ import annotations

from collections.abc import Sequence

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
