"""Headless MuJoCo rendering: pick a working OpenGL backend, write frames as GIF or MP4."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HEADLESS_BACKENDS = ("egl", "osmesa")

# Renders one frame of a one-sphere model in a fresh interpreter: a backend that is broken
# can abort the process, so it is never tried in this one.
_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 1"/><geom size=".1"/></worldbody></mujoco>')
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, 16, 16)
r.update_scene(d)
assert r.render().shape == (16, 16, 3)
r.close()
"""


def backend_works(backend: str, timeout: float = 60.0) -> bool:
    """Whether MuJoCo can render offscreen with ``MUJOCO_GL=backend`` on this machine."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _gl_already_loaded() -> bool:
    return "OpenGL" in sys.modules or "mujoco.rendering.classic.gl_context" in sys.modules


@functools.cache
def ensure_rendering() -> str:
    """Make MuJoCo offscreen rendering work in this process and return the backend used.

    Keeps ``MUJOCO_GL`` when it works, otherwise switches to the first working headless
    backend (EGL, then OSMesa). Raises RuntimeError saying what to install or set when
    none works, or when a switch is needed after OpenGL was already loaded.
    """
    current = os.environ.get("MUJOCO_GL", "").lower()
    candidates = ([current] if current else []) + [b for b in HEADLESS_BACKENDS if b != current]
    for backend in candidates:
        if not backend_works(backend):
            continue
        if backend != current:
            if _gl_already_loaded():
                raise RuntimeError(
                    f"MuJoCo cannot render with MUJOCO_GL={current!r} but can with {backend!r}, and OpenGL is "
                    f"already loaded in this process: start Python with MUJOCO_GL={backend}."
                )
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
        return backend
    raise RuntimeError(
        f"No OpenGL backend renders MuJoCo headless here (tried MUJOCO_GL in {candidates}). Install EGL "
        "(apt-get install -y libegl1) or OSMesa (apt-get install -y libosmesa6), or run without videos."
    )


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int = 20) -> Path:
    """Write RGB frames (H, W, 3) uint8 to ``path``: '.gif' (Pillow) or '.mp4' (needs imageio-ffmpeg)."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError("No frames to write.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    suffix = path.suffix.lower()
    if suffix == ".gif":
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    elif suffix == ".mp4":
        try:
            imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
        except (ImportError, ValueError, RuntimeError) as e:
            raise RuntimeError(f"Writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg), or use a .gif path: {e}") from e
    else:
        raise ValueError(f"Unsupported video format {suffix!r}; use '.gif' or '.mp4'.")
    return path
