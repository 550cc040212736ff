"""Does PyBullet's EGL plugin load here, and on what? Asked in a throwaway process, because a plugin that
cannot start calls exit(1) and would take the caller with it. Kept free of heavy imports (not even pybullet)
so that the CLI can start the probe first thing and let it run beside the config's composition and imports:
it costs a second process ~0.5 s, about a third of a short run's start-up."""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import subprocess
import sys

from .errors import RendererUnavailable

_PROBE = r"""
import importlib.util, pybullet as p
c = p.connect(p.DIRECT)
p.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin", physicsClientId=c)
p.getCameraImage(32, 32, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=c)
print("SIMGEN_EGL_OK")
"""

_started: dict[int | None, subprocess.Popen] = {}


def _spawn(device: int | None) -> subprocess.Popen:
    env = dict(os.environ)
    if device is not None:
        env["EGL_VISIBLE_DEVICES"] = str(device)
    return subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def start_probe(device: int | None = None) -> None:
    """Start the probe for ``device`` in the background; :func:`probe_egl` collects it. Does nothing where the
    plugin is missing, the answer is already known, or a probe is running. A probe never collected is stopped at exit."""
    if device in _started or f"SIMGEN_EGL_OK_{device}" in os.environ or importlib.util.find_spec("eglRenderer") is None:
        return
    _started[device] = _spawn(device)
    atexit.register(_stop, device)


def _stop(device: int | None) -> None:
    proc = _started.pop(device, None)
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def probe_egl(device: int | None = None, timeout: float = 120.0) -> str:
    """Load EGL in a throwaway process (or collect the one :func:`start_probe` started).
    Returns the vendor line it printed (e.g. 'Mesa/X.org' for llvmpipe); raises RendererUnavailable."""
    if importlib.util.find_spec("eglRenderer") is None:
        raise RendererUnavailable("renderer=egl: PyBullet's eglRenderer plugin is not installed; reinstall pybullet==3.2.7 or use renderer=tiny.")
    proc = _started.pop(device, None) or _spawn(device)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RendererUnavailable("renderer=egl: the EGL probe hung; check the GPU driver or use renderer=tiny.") from None
    if "SIMGEN_EGL_OK" not in out:
        raise RendererUnavailable("renderer=egl: EGL cannot start here (no EGL vendor library or device); install Mesa's libegl1 "
                                  "or the NVIDIA driver, or use renderer=tiny.")
    vendor = [ln.split("=", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("GL_RENDERER=")]
    name = vendor[0] if vendor else "unknown"
    os.environ[f"SIMGEN_EGL_OK_{device}"] = name
    return name
