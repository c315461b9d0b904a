"""Config composition for tests, the same way the CLI composes it."""

from __future__ import annotations

from shortcutlib.config import compose_config

TINY_TOY = [
    "domain=toy2d",
    "model.hidden=32",
    "model.depth=2",
    "train.batch_size=64",
    "train.log_every=5",
    "train.warmup_steps=0",
    "domain.eval_samples=256",
    "domain.flow_steps=50",
    "logging.progress=false",
]


make_cfg = compose_config
