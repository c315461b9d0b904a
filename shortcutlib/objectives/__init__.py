"""Training objectives behind one contract (``shortcutlib.objectives.base.Objective``).

Each module implements one method as a class with a nested ``Config``; a config file in
``configs/objective/`` names it with ``_target_``. Nothing else lists them.
"""
