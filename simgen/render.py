"""Stage 3: render a settled scene. A render world holds a pool of visual-only bodies, created once
and moved per scene (creating shapes or textures per scene leaks memory in PyBullet, DESIGN.md §4);
renderers (TinyRenderer, EGL) are swappable behind :class:`Renderer`.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pybullet as p

from . import assets
from .config import EGL_MAX
from .errors import AssetError, ConfigError, RendererUnavailable
from .physics import ClientOwner, link_to_com, tray_boxes
from .types import Camera, Frame, Light, SceneState

PARK = (1000.0, 1000.0, -1000.0)  # far outside every view frustum
BACKGROUND = np.array([128, 128, 128], np.uint8)  # Tiny clears white, EGL grey-blue: composite one colour


def projection_matrix(cam: Camera) -> list[float]:
    """OpenGL projection from pinhole intrinsics (y flipped: image rows grow downwards)."""
    n, f, W, H = cam.near, cam.far, cam.width, cam.height
    return list(p.computeProjectionMatrix(left=-n * (cam.cx + 0.5) / cam.fx, right=n * (W - cam.cx - 0.5) / cam.fx,
                                          bottom=-n * (H - cam.cy - 0.5) / cam.fy, top=n * (cam.cy + 0.5) / cam.fy,
                                          nearVal=n, farVal=f))


def world_to_cam(cam: Camera) -> np.ndarray:
    """4x4 world -> OpenCV camera (x right, y down, z forward)."""
    V = np.array(p.computeViewMatrix(cam.eye, cam.target, cam.up)).reshape(4, 4).T
    return np.diag([1.0, -1.0, -1.0, 1.0]) @ V


class RenderWorld(ClientOwner):
    """One PyBullet client holding visual-only bodies, pooled by (asset, scale, texture)."""

    def __init__(self, textures: dict[str, Path]) -> None:
        super().__init__()
        self.textures = textures
        self.pool: dict[tuple, list[int]] = defaultdict(list)
        self.active: list[int] = []
        self.lut = np.full(1, -1, np.int32)
        self._tinted: dict[int, tuple] = {}
        self._shapes: dict[tuple, int] = {}

    @property
    def n_bodies(self) -> int:
        return sum(len(v) for v in self.pool.values())

    def _mesh_body(self, mesh: Path, scale: tuple[float, float, float], texture: str | None) -> int:
        c = self.client
        key = (mesh, texture, tuple(float(x) for x in scale))
        vs = self._shapes.get(key)
        if vs is None:  # one visual shape per mesh/texture/scale, shared by every body that shows it
            path = assets.baked_obj(mesh, self.textures[texture] if texture else None, key[2])
            vs = c.createVisualShape(p.GEOM_MESH, fileName=str(path), meshScale=[1.0, 1.0, 1.0])
            if vs < 0:
                raise AssetError(f"PyBullet cannot load mesh `{mesh}` for rendering; check that it is a valid OBJ file.")
            self._shapes[key] = vs
        return c.createMultiBody(baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=vs, basePosition=PARK)

    def _body(self, key: tuple, nth: int) -> int:
        """The nth pooled body for ``key``, created on first use."""
        bodies = self.pool[key]
        while len(bodies) <= nth:
            kind = key[0]
            if kind == "object":
                _, name, scale, texture = key
                a = assets.resolve(name)
                if a.kind == "urdf":
                    try:
                        b = self.client.loadURDF(str(a.path), PARK, useFixedBase=True, globalScaling=scale)
                    except p.error:
                        raise AssetError(f"PyBullet cannot load URDF `{a.path}`; check that its mesh files exist next to it.") from None
                else:
                    b = self._mesh_body(a.path, (scale,) * 3, texture)
            else:  # ("box", sx, sy, sz, texture) or ("plane", texture)
                if kind == "plane":
                    b = self._mesh_body(assets.procedural_obj("plane"), (key[2], key[2], 1.0), key[1])
                else:
                    b = self._mesh_body(assets.procedural_obj("box"), key[1:4], key[4])
            bodies.append(b)
        return bodies[nth]

    def _place(self, body: int, pos, orn, rgba) -> None:
        c = self.client
        c.resetBasePositionAndOrientation(body, *link_to_com(c, body, pos, orn))
        rgba = tuple(float(x) for x in rgba)
        if self._tinted.get(body) != rgba:  # changeVisualShape is not free: only when it changes
            for link in range(-1, c.getNumJoints(body)):
                c.changeVisualShape(body, link, rgbaColor=rgba)
            self._tinted[body] = rgba
        self.active.append(body)

    def stage(self, state: SceneState) -> None:
        """Move pooled bodies into this scene's poses; park the rest; build the body -> instance table."""
        c = self.client
        previous = set(self.active)
        self.active = []
        used: dict[tuple, int] = defaultdict(int)

        def take(key: tuple) -> int:
            b = self._body(key, used[key])
            used[key] += 1
            return b

        tray = state.tray
        ground = (tray.floor_texture, tray.floor_rgba) if tray is not None else (state.ground_texture, state.ground_rgba)
        self._place(take(("plane", ground[0], state.ground_size)), (0, 0, -0.0005), (0, 0, 0, 1), ground[1])
        if tray is not None:
            for half, centre, _ in tray_boxes(tray):
                key = ("box", round(2 * half[0], 4), round(2 * half[1], 4), round(2 * half[2], 4), None)
                self._place(take(key), centre, (0, 0, 0, 1), tray.wall_rgba)
        instance_of: dict[int, int] = {}
        for i, obj in enumerate(state.objects):
            s = obj.sample
            b = take(("object", s.asset, s.scale, s.texture))
            self._place(b, obj.position, obj.orientation, s.rgba)
            if obj.category is not None:  # distractors occlude but are never instances
                instance_of[b] = i
        for b in previous - set(self.active):
            c.resetBasePositionAndOrientation(b, PARK, (0, 0, 0, 1))
        top = max([*self.pool_ids(), 0]) + 1
        self.lut = np.full(top, -1, np.int32)
        for b, i in instance_of.items():
            self.lut[b] = i

    def pool_ids(self) -> list[int]:
        return [b for v in self.pool.values() for b in v]


class Renderer:
    """Renders the staged render world from a camera. Subclasses pick PyBullet's renderer."""

    name = "base"
    pybullet_renderer = p.ER_TINY_RENDERER

    def attach(self, world: RenderWorld) -> None:
        """Prepare ``world``'s client for this renderer (load plugins, warm up)."""

    def raw(self, world: RenderWorld, cam: Camera, light: Light) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        view = p.computeViewMatrix(cam.eye, cam.target, cam.up)
        # Light arguments are sticky in PyBullet: pass every one of them on every call.
        _, _, rgba, depth, seg = world.client.getCameraImage(
            cam.width, cam.height, viewMatrix=view, projectionMatrix=projection_matrix(cam),
            lightDirection=list(light.direction), lightColor=list(light.color), lightDistance=light.distance,
            shadow=int(light.shadow), lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse,
            lightSpecularCoeff=light.specular, renderer=self.pybullet_renderer,
            flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX)
        return (np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4), np.asarray(depth, np.float32).reshape(cam.height, cam.width),
                np.asarray(seg, np.int32).reshape(cam.height, cam.width))

    def render(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Frame:
        """RGB, metric depth (zeros unless ``depth``) and the instance map of the staged scene."""
        rgba, dbuf, seg = self.raw(world, cam, light)
        rgb = np.ascontiguousarray(rgba[..., :3])
        empty = seg < 0
        rgb[empty] = BACKGROUND
        if depth:
            n, f = cam.near, cam.far
            z = (f * n / (f - (f - n) * dbuf)).astype(np.float32)
            z[empty] = 0.0  # no surface: 0 is "unknown", as depth sensors report it
        else:
            z = np.zeros(dbuf.shape, np.float32)
        uid = np.where(empty, 0, seg & 0xFFFFFF)
        lut = world.lut
        instance = np.where(empty | (uid >= len(lut)), -1, lut[np.minimum(uid, len(lut) - 1)]).astype(np.int32)
        return Frame(rgb=rgb, depth=z, instance=instance, camera=cam, world_to_cam=world_to_cam(cam))


class TinyRenderer(Renderer):
    name = "tiny"
    pybullet_renderer = p.ER_TINY_RENDERER


_PROBE = r"""
import importlib.util, pybullet as p
c = p.connect(p.DIRECT)
p.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin", physicsClientId=c)
p.getCameraImage(32, 32, renderer=p.ER_BULLET_HARDWARE_OPENGL, physicsClientId=c)
print("SIMGEN_EGL_OK")
"""


def probe_egl(device: int | None = None, timeout: float = 120.0) -> str:
    """Load EGL in a throwaway process (a failing plugin calls exit(1) and would kill us).
    Returns the vendor line it printed (e.g. 'Mesa/X.org' for llvmpipe); raises RendererUnavailable."""
    if importlib.util.find_spec("eglRenderer") is None:
        raise RendererUnavailable("renderer=egl: PyBullet's eglRenderer plugin is not installed; reinstall pybullet==3.2.7 or use renderer=tiny.")
    env = dict(os.environ)
    if device is not None:
        env["EGL_VISIBLE_DEVICES"] = str(device)
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RendererUnavailable("renderer=egl: the EGL probe hung; check the GPU driver or use renderer=tiny.") from None
    if "SIMGEN_EGL_OK" not in r.stdout:
        raise RendererUnavailable("renderer=egl: EGL cannot start here (no EGL vendor library or device); install Mesa's libegl1 "
                                  "or the NVIDIA driver, or use renderer=tiny.")
    vendor = [ln.split("=", 1)[1].strip() for ln in r.stdout.splitlines() if ln.strip().startswith("GL_RENDERER=")]
    name = vendor[0] if vendor else "unknown"
    os.environ[f"SIMGEN_EGL_OK_{device}"] = name
    return name


class EglRenderer(Renderer):
    """PyBullet's EGL plugin: GPU with the NVIDIA driver, llvmpipe with Mesa. Probed in a subprocess first."""

    name = "egl"
    pybullet_renderer = p.ER_BULLET_HARDWARE_OPENGL
    _probed: dict = {}

    def __init__(self, device: int | None = None) -> None:
        self.device = device
        self.vendor = ""

    def attach(self, world: RenderWorld) -> None:
        if self.device not in EglRenderer._probed:
            # A parent that already probed this device says so through the environment, so that
            # spawned workers do not each pay for a probe process.
            known = os.environ.get(f"SIMGEN_EGL_OK_{self.device}")
            EglRenderer._probed[self.device] = known or probe_egl(self.device)
        self.vendor = EglRenderer._probed[self.device]
        if self.device is not None:
            # The plugin reads this once, when it loads; it indexes EGL devices, not CUDA's numbering.
            os.environ["EGL_VISIBLE_DEVICES"] = str(self.device)
        world.client.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin")
        cam = Camera(64, 64, 64, 64, 32, 32, (0, 0, 1), (0, 0, 0), (0, 1, 0), 0.1, 2)
        light = Light((0, 0, 1), (1, 1, 1), 10, 0.5, 0.5, 0.1, True)
        for _ in range(2):  # the first two frames after loading lack shadows
            self.raw(world, cam, light)

    def render(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Frame:
        if cam.width > EGL_MAX[0] or cam.height > EGL_MAX[1]:
            raise ConfigError(f"renderer=egl cannot render {cam.width}x{cam.height} without stretching (max {EGL_MAX[0]}x{EGL_MAX[1]}).")
        return super().render(world, cam, light, depth)


def share_software_gl(processes: int) -> None:
    """Mesa's llvmpipe starts one raster thread per core in every process, so N rendering processes on
    N cores oversubscribe them (by hand, 96 dice images: 2 EGL workers on 2 cores ran 1.5x one worker,
    1.8x with one thread each). Give each process its share of the cores unless the user set LP_NUM_THREADS.
    Call before the EGL plugin loads; GPU drivers ignore the variable."""
    if processes > 1 and "LP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["LP_NUM_THREADS"] = str(max(1, cores // processes))


def make_renderer(name: str, device: int | None = None) -> Renderer:
    if name == "tiny":
        return TinyRenderer()
    if name == "egl":
        return EglRenderer(device)
    raise ConfigError(f"unknown renderer `{name}`; use tiny or egl.")
