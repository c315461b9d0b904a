"""Describe the machine a benchmark ran on, for its results file."""

from __future__ import annotations

import os
import platform


def describe_machine() -> str:
    import jax

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (
        f"{cpu}, {os.cpu_count()} cores visible; JAX {jax.__version__} on {len(devices)} "
        f"{devices[0].platform} device(s) ({', '.join(kinds)}); Python {platform.python_version()}"
    )
