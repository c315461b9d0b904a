"""Domains: what is specific to a kind of data. ``build_domain(cfg.domain)`` picks one by name."""

from __future__ import annotations

import importlib
from typing import Any

DOMAINS = {
    "digits": "domains.digits.domain:DigitsDomain",
    "toy2d": "domains.toy.domain:Toy2DDomain",
    "imagenet": "domains.images.domain:ImageDomain",
    "celebahq": "domains.images.domain:ImageDomain",
    "image_folder": "domains.images.domain:ImageDomain",
    "robot": "domains.robot.domain:RobotDomain",
}


def build_domain(cfg: Any) -> Any:
    name = cfg["name"]
    if name not in DOMAINS:
        raise ValueError(f"Unknown domain '{name}'. Accepted: {', '.join(sorted(DOMAINS))}.")
    module, cls = DOMAINS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)
