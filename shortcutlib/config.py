"""Compose the run configuration in code, exactly as the command line does."""

from __future__ import annotations

from hydra import compose, initialize_config_module
from omegaconf import DictConfig


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """``compose_config(["domain=toy2d", "train.steps=100"])`` == ``python -m shortcutlib.run domain=toy2d train.steps=100``."""
    with initialize_config_module(config_module="configs", version_base=None):
        return compose(config_name="config", overrides=list(overrides or []))
