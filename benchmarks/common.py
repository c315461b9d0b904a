"""Helpers shared by benchmark scripts: the machine, configs, sample functions, markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import jax
from flax import nnx
from omegaconf import DictConfig

from benchmarks.machine import describe_machine as machine_description  # noqa: F401  (re-exported)
from domains.base import SampleFn
from shortcutlib.inference import make_sample_fn
from shortcutlib.objectives.common import VelocityFn


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The same config ``python -m shortcutlib.run <overrides>`` would build."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("configs", version_base=None):
        return compose("config", overrides=list(overrides))


class QueriedBackbone(nnx.Module):
    """A backbone whose (x, t, d, cond) query is remapped by the objective's ``sampler_query``."""

    def __init__(self, backbone: nnx.Module, query: Any):
        self.backbone = backbone
        self.query = query

    def __call__(self, x: jax.Array, t: jax.Array, d: jax.Array, cond: Any = None, *, train: bool = False) -> jax.Array:
        inner: VelocityFn = lambda x_, t_, d_, c_: self.backbone(x_, t_, d_, c_, train=train)  # noqa: E731
        return self.query(inner)(x, t, d, cond)


def sample_fn_for(
    graphdef: nnx.GraphDef, params: Any, objective: ModuleType, sample_shape: tuple[int, ...], *, num_classes: int = 0, cfg_scale: float = 1.0
) -> SampleFn:
    """``make_sample_fn``, honouring an objective's ``sampler_query`` (consistency models query d = 1 - t).

    Applying the query twice is harmless (it is idempotent), so this stays correct if the
    sampler itself learns to apply it.
    """
    query = getattr(objective, "sampler_query", None)
    if query is not None:
        graphdef, params = nnx.split(QueriedBackbone(nnx.merge(graphdef, params), query), nnx.Param)
    return make_sample_fn(graphdef, params, objective, sample_shape, cfg_scale=cfg_scale, num_classes=num_classes)


def fmt(value: float, digits: int = 3) -> str:
    if value != value:  # nan
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
