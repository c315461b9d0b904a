"""Timing that survives a noisy machine: alternate the contenders, compare within each round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def interleaved_step_times(
    steps: dict[str, Callable[[Any, Any], tuple[Any, Any]]],
    states: dict[str, Any],
    batches: list[Any],
    *,
    rounds: int = 7,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per step of each contender, one list entry per round, and the final states
    (the inputs may be donated to the steps).

    Each round runs every contender over the same ``batches`` back to back, so a slow
    moment of the machine hits all of them; compile and warm up before the first round.
    """
    states = dict(states)
    for name, step in steps.items():
        states[name], out = step(states[name], batches[0])
        jax.block_until_ready(out)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for batch in batches:
                states[name], out = step(states[name], batch)
            jax.block_until_ready((states[name], out))
            times[name].append((time.perf_counter() - start) / len(batches))
    return times, states


def median_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, list[float]]:
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(ratios), ratios
