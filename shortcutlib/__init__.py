"""shortcutlib: one-step generative modeling with shortcut models in JAX.

``shortcutlib.load(run_dir)`` gives a trained model (see ``shortcutlib.api``); the command line is
``python -m shortcutlib.run``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Model", "load"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``import shortcutlib.config`` stays light.
    if name in __all__:
        from shortcutlib import api

        return getattr(api, name)
    raise AttributeError(f"module 'shortcutlib' has no attribute {name!r}")
