"""Command-line entry points, each a thin module over the library: ``python -m shortcutlib.cli.<name>``."""
