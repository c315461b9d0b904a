"""Robot domain: offline datasets, scripted experts, demonstration collection and MuJoCo rollouts.

Submodules import MuJoCo, Gymnasium and OGBench lazily; importing this package stays cheap.
Headless rendering defaults to EGL (``MUJOCO_GL=egl``) unless MUJOCO_GL is already set;
``video.ensure_rendering`` checks that the backend works and falls back to OSMesa.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

# Gymnasium loads gymnasium-robotics as a plugin on import, and that prints a notice about its
# Adroit reward functions to stderr every time; no task here uses Adroit, so the notice is dropped.
try:
    from farama_notifications import notifications

    notifications.pop("gymnasium_robotics", None)
except ImportError:  # the robot extra is not installed
    pass

# Locally collected and generated datasets are cached here (the domain's ``data_dir`` default).
DEFAULT_DATA_DIR = "~/.cache/shortcutlib/robot"
