"""Does PyBullet's EGL plugin load here, and on what? Asked in a throwaway process, because a plugin that
cannot start calls exit(1) and would take the caller with it. Kept free of heavy imports (not even pybullet)
so that the CLI can start the probe first thing and let it run beside the config's composition and imports.

A probe costs ~0.5 s of CPU (loading Mesa's or NVIDIA's EGL and LLVM), about a fifth of a short run's start-up on
2 cores, for an answer that only changes when the machine's EGL changes. So a "yes" is kept in the cache folder
for a day under a fingerprint of what decides it (the plugin's file, the EGL vendor files glvnd reads, the GPU and
DRI device nodes, the NVIDIA driver's version, the environment variables that steer EGL and the library path the
process started with, the host), and later runs on the same machine skip the process. A "no" is never kept:
installing a driver takes effect at once.

What the fingerprint cannot see (a library removed from under its vendor file, a GPU fallen off the bus) would make a
cached "yes" wrong, and the in-process load would then end its process. Every in-process load is therefore bracketed
by a marker file (:func:`loading`); a marker left by a process that is gone voids the whole cache, so the next run
probes in a throwaway process again and says in one line what is wrong."""
from __future__ import annotations

import atexit
import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .cache import atomic_write_bytes, cache_dir
from .errors import RendererUnavailable

_PROBE = r"""
import importlib.util, pybullet as p
c = p.connect(p.DIRECT)
p.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin", physicsClientId=c)
p.getCameraImage(32, 32, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=c)
print("SIMGEN_EGL_OK")
"""

_started: dict[int | None, subprocess.Popen] = {}

CACHE_SECONDS = 24 * 3600
# what makes EGL load or not, besides the files fingerprinted below. LD_LIBRARY_PATH is read from what the process
# started with (see _start_env): importing OpenCV rewrites it inside the process, and the loader used the first value.
# EGL_VISIBLE_DEVICES only without a device: with one, simgen sets it itself.
_EGL_ENV = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "__EGL_VENDOR_LIBRARY_FILENAMES",
            "__EGL_VENDOR_LIBRARY_DIRS", "__GLX_VENDOR_LIBRARY_NAME", "LIBGL_ALWAYS_SOFTWARE", "GALLIUM_DRIVER",
            "MESA_LOADER_DRIVER_OVERRIDE", "EGL_PLATFORM", "LD_PRELOAD")
_EGL_FILES = ("/usr/share/glvnd/egl_vendor.d/*", "/etc/glvnd/egl_vendor.d/*", "/dev/dri/*", "/dev/nvidia*",
              "/proc/driver/nvidia/version")


def _cache_file() -> Path:
    return cache_dir() / "egl-probe.json"


def _start_env(name: str) -> str | None:
    """An environment variable as this process started with it (what the dynamic loader saw)."""
    try:
        for item in Path("/proc/self/environ").read_bytes().split(b"\0"):
            if item.startswith(name.encode() + b"="):
                return item.split(b"=", 1)[1].decode(errors="replace")
        return None
    except OSError:  # no /proc (macOS): the current value
        return os.environ.get(name)


def _markers() -> Path:
    return _cache_file().with_name("egl-loading")


@contextlib.contextmanager
def loading():
    """Bracket an in-process load of the EGL plugin: a process that dies inside leaves its marker behind, and the
    next :func:`cached_vendor` then forgets every cached answer (see the module's docstring)."""
    marker = None
    try:
        marker = _markers() / str(os.getpid())
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache folder: nothing is cached there either
        marker = None
    yield
    if marker is not None:
        with contextlib.suppress(OSError):
            marker.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process: alive
        return True
    return True


def _void_if_a_load_died() -> None:
    with contextlib.suppress(OSError):
        dead = [m for m in _markers().iterdir() if not (m.name.isdigit() and _alive(int(m.name)))]
        if dead:
            _cache_file().unlink(missing_ok=True)
            for m in dead:
                m.unlink(missing_ok=True)


def fingerprint(device: int | None) -> str | None:
    """A digest of what decides whether the EGL plugin loads here for ``device``; None where there is no plugin."""
    spec = importlib.util.find_spec("eglRenderer")
    if spec is None or not spec.origin:
        return None
    parts = [platform.node(), str(device), os.path.realpath(sys.executable)]
    for path in [spec.origin, *sorted(f for pat in _EGL_FILES for f in glob.glob(pat))]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        parts.append(f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_rdev}")
    with contextlib.suppress(OSError):  # the driver's version line: an upgraded driver re-probes
        parts.append(Path("/proc/driver/nvidia/version").read_text().splitlines()[0])
    parts += [f"{k}={os.environ.get(k)}" for k in _EGL_ENV]
    parts.append(f"LD_LIBRARY_PATH={_start_env('LD_LIBRARY_PATH')}")
    if device is None:
        parts.append(f"EGL_VISIBLE_DEVICES={os.environ.get('EGL_VISIBLE_DEVICES')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _known() -> dict:
    try:
        known = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def cached_vendor(device: int | None) -> str | None:
    """The vendor a past probe on this machine found for ``device`` within a day, if nothing that decides it has changed
    since and no in-process load has died since."""
    _void_if_a_load_died()
    key = fingerprint(device)
    entry = _known().get(key) if key else None
    if not isinstance(entry, dict) or not isinstance(entry.get("vendor"), str) or not entry["vendor"]:
        return None
    if not 0 <= time.time() - float(entry.get("time", 0)) < CACHE_SECONDS:
        return None
    return entry["vendor"]


def _remember(device: int | None, vendor: str) -> None:
    key = fingerprint(device)
    if not key:
        return
    known = {k: v for k, v in _known().items() if k != key}
    known = dict(list(known.items())[-31:])  # a handful of machines and devices share a home folder at most
    known[key] = {"vendor": vendor, "time": time.time()}
    with contextlib.suppress(OSError):  # a read-only home only costs the next run a probe
        atomic_write_bytes(_cache_file(), json.dumps(known, indent=1).encode())


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
    vendor = cached_vendor(device)
    if vendor is not None:  # probed on this machine before, and nothing it depends on has changed
        os.environ[f"SIMGEN_EGL_OK_{device}"] = vendor
        return
    _started[device] = _spawn(device)
    atexit.register(_stop, _started, device)


def _stop(started: dict, device: int | None) -> None:
    """Stop the probe for ``device`` in ``started`` (EGL's or the GL renderer's) if nobody collected it."""
    proc = started.pop(device, None)
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def probe_egl(device: int | None = None, timeout: float = 120.0) -> str:
    """Load EGL in a throwaway process (or collect the one :func:`start_probe` started), unless this machine's answer
    is cached (see the module's docstring). Returns the vendor line it printed (e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)'
    for Mesa); raises RendererUnavailable."""
    if importlib.util.find_spec("eglRenderer") is None:
        raise RendererUnavailable("renderer=egl: PyBullet's eglRenderer plugin is not installed; reinstall pybullet==3.2.7 or use renderer=tiny.")
    if device not in _started:
        vendor = cached_vendor(device)
        if vendor is not None:
            os.environ[f"SIMGEN_EGL_OK_{device}"] = vendor
            return vendor
    proc = _started.pop(device, None) or _spawn(device)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RendererUnavailable("renderer=egl: the EGL probe hung; check the GPU driver or use renderer=tiny.") from None
    if "SIMGEN_EGL_OK" not in out:
        count = egl_device_count() if device is not None else None
        if count is not None and device >= count:  # EGL works; the index asked for does not exist
            raise RendererUnavailable(f"renderer=egl: no EGL device {device} here (this machine has {count}, numbered from 0); "
                                      "check renderer.devices (or CUDA_VISIBLE_DEVICES).")
        raise RendererUnavailable("renderer=egl: EGL cannot start here (no EGL vendor library or device); install Mesa's libegl1 "
                                  "or the NVIDIA driver, or use renderer=tiny.")
    vendor = [ln.split("=", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("GL_RENDERER=")]
    name = vendor[0] if vendor else "unknown"
    os.environ[f"SIMGEN_EGL_OK_{device}"] = name
    _remember(device, name)
    return name


_COUNT_DEVICES = r"""
import ctypes
egl = ctypes.CDLL("libEGL.so.1")
egl.eglGetProcAddress.restype = ctypes.c_void_p
query = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
n = ctypes.c_int(0)
if query and ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))(query)(0, None, ctypes.byref(n)):
    print(n.value)
"""


def egl_device_count() -> int | None:
    """How many EGL devices this machine has (eglQueryDevicesEXT, asked in a throwaway process so that this one loads no
    EGL), or None where that cannot be told. Only asked after a probe failed: to tell a wrong device index from no EGL."""
    try:
        r = subprocess.run([sys.executable, "-c", _COUNT_DEVICES], capture_output=True, text=True, timeout=60)
        return int(r.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


# simgen's GL renderer (renderer=gl) asks the same of EGL through moderngl: an OpenGL 3.3 context. Its probe lives
# here, beside EGL's, so that simgen's command line can start it without importing the renderer (and PyBullet).
GL_PROBE = r"""
import sys
try:
    import moderngl
except ImportError:
    print("SIMGEN_GL_MISSING"); sys.exit(0)
kwargs = {"backend": "egl"}
if sys.argv[1] != "None":
    kwargs["device_index"] = int(sys.argv[1])
try:
    c = moderngl.create_standalone_context(require=330, **kwargs)
except Exception as e:
    print("SIMGEN_GL_FAIL " + (str(e).splitlines()[0] if str(e) else type(e).__name__)); sys.exit(0)
print("SIMGEN_GL_OK " + c.info["GL_RENDERER"] + " (" + c.info["GL_VERSION"] + ")")
"""

gl_started: dict[int | None, subprocess.Popen] = {}  # GL probes started early (start_gl_probe), by device


def gl_probe_process(device: int | None) -> subprocess.Popen:
    """The GL probe's process for ``device``; :func:`simgen.glrender.probe_gl` reads its answer."""
    return subprocess.Popen([sys.executable, "-c", GL_PROBE, str(device)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def start_gl_probe(device: int | None = None) -> None:
    """Start :func:`simgen.glrender.probe_gl`'s process now, in the background (simgen's command line does, beside
    composing its config: otherwise a short run waits ~0.1 s for it); probe_gl collects it. Does nothing where moderngl
    is missing, the answer is known, or a probe is running. One never collected is stopped at exit."""
    if device in gl_started or f"SIMGEN_GL_OK_{device}" in os.environ or importlib.util.find_spec("moderngl") is None:
        return
    gl_started[device] = gl_probe_process(device)
    atexit.register(_stop, gl_started, device)


def stop_gl_probes() -> None:
    """Stop and reap the GL probes started early that nobody will collect: a run that settled on another renderer
    (``renderer=auto`` keeps TinyRenderer for small images without asking the GL renderer) would otherwise carry the
    finished probe as a zombie child until it exits."""
    for device in list(gl_started):
        _stop(gl_started, device)
