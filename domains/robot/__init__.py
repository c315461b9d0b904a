"""Robot domain: offline datasets, scripted experts, demonstration collection and MuJoCo rollouts.

Submodules import MuJoCo, Gymnasium and OGBench lazily; importing this package stays cheap.
Headless rendering defaults to EGL (``MUJOCO_GL=egl``) unless MUJOCO_GL is already set;
``video.ensure_rendering`` checks that the backend works and falls back to OSMesa.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

# Locally collected and generated datasets are cached here (the domain's ``data_dir`` default).
DEFAULT_DATA_DIR = "~/.cache/shortcutlib/robot"
