"""Stage 3: render a settled scene. A render world holds a pool of visual-only bodies, created once
and moved per scene (creating shapes or textures per scene leaks memory in PyBullet, DESIGN.md §4);
renderers (TinyRenderer, EGL) are swappable behind :class:`Renderer`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pybullet as p

from . import assets, eglprobe
from .config import EGL_MAX
from .eglprobe import probe_egl
from .errors import AssetError, ConfigError, RendererUnavailable
from .physics import ClientOwner, link_to_com, tray_boxes
from .textures import DEFAULT_TILE_M, atomic_write_bytes, cache_dir, render_texture, tile_size
from .types import Camera, Frame, Light, MeshDraw, SceneState

PARK = (1000.0, 1000.0, -1000.0)  # far outside every view frustum
BACKGROUND = np.array([128, 128, 128], np.uint8)  # Tiny clears white, EGL grey-blue: composite one colour


def projection_matrix(cam: Camera) -> list[float]:
    """OpenGL projection from pinhole intrinsics (y flipped: image rows grow downwards)."""
    n, f, W, H = cam.near, cam.far, cam.width, cam.height
    return list(p.computeProjectionMatrix(left=-n * (cam.cx + 0.5) / cam.fx, right=n * (W - cam.cx - 0.5) / cam.fx,
                                          bottom=-n * (H - cam.cy - 0.5) / cam.fy, top=n * (cam.cy + 0.5) / cam.fy,
                                          nearVal=n, farVal=f))


# ----------------------------------------------------------------------------- the ground and backdrop
# A ground plane cannot fill every view: a tilted camera sees above the horizon, and ground farther
# than the far plane is clipped, both leaving empty background. So there are two bodies:
# - the floor: a plane at the origin reaching `far` in every direction, its texture repeated at a
#   fixed physical size (textures.tile_size) and fixed to the world, so it stays put between views;
# - the backdrop: a plain box (walls, lid and a floor just below the real one) in the ground's mean
#   colour, centred under the eye and wholly inside its far plane, so every ray from the eye meets
#   something before `far`. The walls show only at steep tilts, like a room's wall behind a table.
BACKDROP_HALF = 0.45  # box half-width as a fraction of `far` ...
BACKDROP_HEIGHT = 0.5  # ... and lid height: corners sqrt(2 * 0.45^2 + 0.5^2) f = 0.81 f from an eye at the floor
BACKDROP_SINK = 0.01  # its floor sits this far below the real one (m): hidden where the real floor reaches
CELL_M = 0.5  # mesh cells: TinyRenderer clips large triangles that reach behind the camera badly


@dataclass(frozen=True)
class Box:
    """An axis-aligned, inward-facing box mesh with UVs in texture tiles."""

    half: float  # half-width of the square base (m)
    height: float  # lid height above the base (m); 0: the base alone (the floor)
    tile: float  # metres per texture repeat
    base: bool = True  # False: walls and lid only (where the floor lies under the whole box)


def floor_for(cam: Camera, texture: str | None) -> Box:
    """The floor: half-width `far` rounded up to whole tiles (the UVs then start on a tile edge at
    the origin, fixing the texture to the world). A function of `far` and the texture only, so one
    mesh per config and ground look is pooled."""
    tile = tile_size(texture) if texture else DEFAULT_TILE_M
    return Box(half=round(math.ceil(cam.far / tile) * tile, 6), height=0.0, tile=tile)


def backdrop_for(cam: Camera, floor: Box | None = None) -> Box:
    """The backdrop for ``cam``'s far plane (plain: its tile is only the UV scale of an untextured mesh).
    It has a base of its own only where ``floor`` does not lie under all of it (an eye far from the
    origin): a second full-screen layer under the floor would cost TinyRenderer a third more time."""
    half = round(BACKDROP_HALF * cam.far, 6)
    covered = floor is not None and max(abs(cam.eye[0]), abs(cam.eye[1])) + half <= floor.half
    return Box(half=half, height=round(BACKDROP_HEIGHT * cam.far, 6), tile=DEFAULT_TILE_M, base=not covered)


def _face(origin, ea, eb, la: float, lb: float, uv, out: dict) -> None:
    """Append a rectangle origin + s*ea + t*eb (s in [0, la], t in [0, lb]) split in cells of at most
    CELL_M, wound counter-clockwise seen from ea x eb (its front side)."""
    na, nb = max(1, math.ceil(la / CELL_M - 1e-9)), max(1, math.ceil(lb / CELL_M - 1e-9))
    origin, ea, eb = (np.asarray(x, float) for x in (origin, ea, eb))
    out["vn"].append(np.cross(ea, eb))
    n = len(out["vn"])
    start = len(out["v"])
    for j in range(nb + 1):
        for i in range(na + 1):
            point = origin + ea * la * i / na + eb * lb * j / nb
            out["v"].append(point)
            out["vt"].append(uv(point))
    for j in range(nb):
        for i in range(na):
            a = start + j * (na + 1) + i + 1  # OBJ indices are 1-based
            b, d = a + 1, a + na + 1
            out["f"] += [(a, b, d + 1, n), (a, d + 1, d, n)]


def box_obj(box: Box) -> Path:
    """The box as an OBJ (cached by content): inward-facing base, and walls and lid when it has a
    height. UVs count texture tiles from the base's corner, so they are never negative (TinyRenderer
    and EGL both repeat UVs above 1)."""
    data = _box_obj_text(box)
    path = cache_dir() / "meshes" / f"groundbox-{hashlib.sha1(data).hexdigest()[:16]}.obj"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


@functools.lru_cache(maxsize=None)  # a floor of 8 m is ~300 vertices built in Python: ~3 ms each new ground look
def _box_obj_text(box: Box) -> bytes:
    h, H, t = box.half, box.height, box.tile
    out: dict = {"v": [], "vt": [], "vn": [], "f": []}
    plan = lambda q: ((q[0] + h) / t, (q[1] + h) / t)  # noqa: E731 - base and lid
    along_x = lambda q: ((q[0] + h) / t, q[2] / t)  # noqa: E731
    along_y = lambda q: ((q[1] + h) / t, q[2] / t)  # noqa: E731
    X, Y, Z = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    if box.base:
        _face((-h, -h, 0), X, Y, 2 * h, 2 * h, plan, out)  # base, facing up
    if H > 0:
        _face((-h, -h, H), Y, X, 2 * h, 2 * h, plan, out)  # lid, facing down
        _face((-h, h, 0), X, Z, 2 * h, H, along_x, out)  # wall at +y, facing -y
        _face((-h, -h, 0), Z, X, H, 2 * h, along_x, out)  # wall at -y, facing +y
        _face((h, -h, 0), Z, Y, H, 2 * h, along_y, out)  # wall at +x, facing -x
        _face((-h, -h, 0), Y, Z, 2 * h, H, along_y, out)  # wall at -x, facing +x
    lines = ["# simgen ground box"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in out["v"]]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in out["vt"]]
    lines += [f"vn {x:.0f} {y:.0f} {z:.0f}" for x, y, z in out["vn"]]
    lines += [f"f {a}/{a}/{n} {b}/{b}/{n} {c}/{c}/{n}" for a, b, c, n in out["f"]]
    return ("\n".join(lines) + "\n").encode()


def shadow_distance(cam: Camera, backdrop: Box) -> float:
    """The `lightDistance` to render with. TinyRenderer draws its shadow map from lightDirection *
    lightDistance towards the origin through the *camera's* projection: from 10 m (the sampled light
    distance) the scene lies beyond the far plane and no shadow is ever drawn (measured here: none at
    5 m or more, shadows at 3 m or less). From the camera's own distance the map covers what the camera
    sees; kept below the lid so the lid never shadows the scene. EGL ignores it (measured)."""
    return float(min(np.linalg.norm(np.subtract(cam.eye, cam.target)), 0.9 * backdrop.height))


def look_at(eye, target, up) -> np.ndarray:
    """4x4 world -> OpenGL eye (x right, y up, looking down -z), row-major (PyBullet's list is column-major)."""
    return np.array(p.computeViewMatrix(list(eye), list(target), list(up))).reshape(4, 4).T


def world_to_cam(cam: Camera) -> np.ndarray:
    """4x4 world -> OpenCV camera (x right, y down, z forward)."""
    return np.diag([1.0, -1.0, -1.0, 1.0]) @ look_at(cam.eye, cam.target, cam.up)


def metric_depth(dbuf: np.ndarray, cam: Camera, empty: np.ndarray) -> np.ndarray:
    """A depth buffer (0..1) as metres along the optical axis; 0 where nothing was drawn ("unknown", as depth
    sensors report it)."""
    n, f = cam.near, cam.far
    z = np.multiply(dbuf, np.float32(f - n), dtype=np.float32)  # in place from here: one array, not three
    np.subtract(np.float32(f), z, out=z)
    np.divide(np.float32(f * n), z, out=z)
    z[empty] = 0.0
    return z


# PyBullet's EGL plugin keeps every visual shape's vertices in one buffer of 128 MB (GLInstancingRenderer's
# maxShapeCapacityInBytes), 108 bytes per triangle (3 corners x 9 floats), and silently draws nothing for a shape
# past it: a 240k-triangle scan filled it with its fifth (scale, texture) copy and later images lost their objects.
# A world that would pass SHAPE_BUDGET is reset and its pools rebuilt; the rest is headroom for grounds.
SHAPE_BYTES_PER_TRIANGLE = 108
EGL_SHAPE_BUDGET = 100 * 1024 * 1024


class RenderWorld(ClientOwner):
    """One PyBullet client holding visual-only bodies, pooled by (asset, scale, texture)."""

    def __init__(self, textures: dict[str, Path]) -> None:
        super().__init__()
        self.textures = textures
        self.shape_budget: int | None = None  # set by a renderer whose shapes share a fixed buffer (EGL)
        self.shape_bytes = 0  # what the pooled object shapes take of it
        # False where the renderer draws the world itself from `mesh_of` and the poses (renderer=gl): mesh bodies are
        # then made without a PyBullet visual shape, so no baked OBJ copy per (scale, texture) is written, parsed by
        # PyBullet and parsed again by the renderer (~7 ms each, ~250 of them in a 60-image tabletop run), and tints
        # are not sent to PyBullet (the renderer reads `_tinted`). A URDF body is its own file loaded at globalScaling
        # (no per-scale copy baked): the renderer draws its meshes from getVisualShapeData, at the scale reported there.
        self.pybullet_draws = True
        self.mesh_of: dict[int, MeshDraw] = {}
        self.flushes = 0
        self._costed: set[tuple] = set()
        self.pool: dict[tuple, list[int]] = defaultdict(list)
        self.active: list[int] = []
        self.lut = np.full(1, -1, np.int32)
        self._tinted: dict[int, tuple] = {}
        self._shapes: dict[tuple, int] = {}
        self.ground: tuple[str | None, tuple] = (None, (0.8, 0.8, 0.8, 1.0))  # (texture, rgba) of this scene
        self._grounds: dict[tuple, int] = {}  # (texture, Box) -> body: one per size and look, reused
        self._ground_bodies: list[int | None] = [None, None]  # floor, backdrop now shown
        self._means: dict[str, tuple[float, float, float]] = {}
        self._staged: SceneState | None = None

    @property
    def n_bodies(self) -> int:
        return sum(len(v) for v in self.pool.values())

    def _mesh_body(self, mesh: Path, scale: tuple[float, float, float], texture: str | None,
                   offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> int:
        c = self.client
        key = (mesh, texture, tuple(float(x) for x in scale))  # a mesh file has one offset
        image = self.textures[texture] if texture else None
        if not self.pybullet_draws:
            b = c.createMultiBody(baseMass=0, baseCollisionShapeIndex=-1, baseVisualShapeIndex=-1, basePosition=PARK)
            self.mesh_of[b] = MeshDraw(mesh, image, key[2], tuple(float(x) for x in offset))  # type: ignore[arg-type]
            return b
        vs = self._shapes.get(key)
        if vs is None:  # one visual shape per mesh/texture/scale, shared by every body that shows it
            path = assets.baked_obj(mesh, image, key[2], offset)
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
                        if self.pybullet_draws:
                            # scale written into a copy: EGL draws every globalScaling of one file at the first one's
                            # ... and without collision shapes: this client only draws (no collision mesh baked, no hulls)
                            b = self.client.loadURDF(str(assets.scaled_urdf(a.path, float(scale), visual_only=True)), PARK, useFixedBase=True)
                        else:  # the renderer draws the source meshes at the scale PyBullet reports: no copy to bake
                            b = self.client.loadURDF(str(a.path), PARK, useFixedBase=True, globalScaling=float(scale),
                                                     flags=p.URDF_IGNORE_COLLISION_SHAPES)
                    except p.error:
                        raise AssetError(f"PyBullet cannot load URDF `{a.path}`; check that its mesh files exist next to it.") from None
                else:
                    b = self._mesh_body(a.path, (scale,) * 3, texture, a.offset)
            else:  # ("box", sx, sy, sz, texture)
                b = self._mesh_body(assets.procedural_obj("box"), key[1:4], key[4])
            bodies.append(b)
        return bodies[nth]

    def _pose(self, body: int, pos, orn, rgba) -> None:
        c = self.client
        c.resetBasePositionAndOrientation(body, *link_to_com(c, body, pos, orn))
        rgba = tuple(float(x) for x in rgba)
        if self._tinted.get(body) != rgba:  # changeVisualShape is not free: only when it changes
            if self.pybullet_draws:
                for link in range(-1, c.getNumJoints(body)):
                    c.changeVisualShape(body, link, rgbaColor=rgba)
            self._tinted[body] = rgba

    def _place(self, body: int, pos, orn, rgba) -> None:
        self._pose(body, pos, orn, rgba)
        self.active.append(body)

    def frame(self, cam: Camera) -> Box:
        """Place the floor and, around ``cam``, the backdrop, in this scene's ground look. Returns the backdrop."""
        texture, rgba = self.ground
        floor = floor_for(cam, texture)
        backdrop = backdrop_for(cam, floor)
        self._show(0, (texture, floor), (0.0, 0.0, -0.0005), rgba)
        # The backdrop is plain, in the texture's mean colour: like a room's wall behind the table, free of
        # far-away moire, and one untextured shape for every look (a textured copy per ground texture
        # would hold another copy of each texture in memory).
        tint = tuple(float(a * m) for a, m in zip(rgba, (*self._mean_colour(texture), 1.0)))
        self._show(1, (None, backdrop), (cam.eye[0], cam.eye[1], -0.0005 - BACKDROP_SINK), tint)
        return backdrop

    def _mean_colour(self, texture: str | None) -> tuple[float, float, float]:
        """Mean RGB (0..1) of a texture file, read once."""
        if texture is None:
            return (1.0, 1.0, 1.0)
        if texture not in self._means:
            img = cv2.imread(str(render_texture(self.textures[texture])), cv2.IMREAD_COLOR)  # the BMP copy: same pixels, no inflate
            self._means[texture] = tuple(float(c) / 255 for c in cv2.mean(img)[2::-1]) if img is not None else (1.0, 1.0, 1.0)
        return self._means[texture]

    def _show(self, slot: int, key: tuple, pos: tuple[float, float, float], rgba: tuple) -> None:
        """Show the ground body ``key`` (created once) in ``slot`` (0 floor, 1 backdrop), parking the one it replaces."""
        body = self._grounds.get(key)
        if body is None:
            body = self._grounds[key] = self._mesh_body(box_obj(key[1]), (1.0, 1.0, 1.0), key[0])
        shown = self._ground_bodies[slot]
        if shown not in (None, body):
            self.client.resetBasePositionAndOrientation(shown, PARK, (0, 0, 0, 1))
        self._ground_bodies[slot] = body
        self._pose(body, pos, (0, 0, 0, 1), rgba)

    @property
    def ground_ids(self) -> tuple[int, ...]:
        """Body ids of the floor and backdrop now shown."""
        return tuple(b for b in self._ground_bodies if b is not None)

    def stage(self, state: SceneState) -> None:
        """Move pooled bodies into this scene's poses; park the rest; build the body -> instance table.
        The next view of the scene staged last finds it staged already (views_per_scene)."""
        if state is self._staged:
            return
        self._fit_shapes(state)
        c = self.client
        previous = set(self.active)
        self.active = []
        used: dict[tuple, int] = defaultdict(int)

        def take(key: tuple) -> int:
            b = self._body(key, used[key])
            used[key] += 1
            return b

        tray = state.tray
        # Inside a tray the tray's floor is the ground; placed around each camera by frame().
        self.ground = (tray.floor_texture, tray.floor_rgba) if tray is not None else (state.ground_texture, state.ground_rgba)
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
        # One slot per body id plus a last -1 slot that every id past the table (and "nothing drawn") is clipped to.
        top = max([*self.pool_ids(), 0]) + 2
        self.lut = np.full(top, -1, np.int32)
        for b, i in instance_of.items():
            self.lut[b] = i
        self._staged = state

    def pool_ids(self) -> list[int]:
        return [b for v in self.pool.values() for b in v]

    def _fit_shapes(self, state: SceneState) -> None:
        """Keep the shapes this scene needs within ``shape_budget``: when its new ones would pass it, every pooled
        body and shape goes (resetSimulation frees the EGL buffer) and the pools refill from this scene on."""
        if self.shape_budget is None:
            return
        # the pool keys stage() takes for the objects: one visual shape each
        need = {k: SHAPE_BYTES_PER_TRIANGLE * len(assets.resolve(k[1]).triangles)
                for k in {("object", o.sample.asset, o.sample.scale, o.sample.texture) for o in state.objects}}
        new = sum(v for k, v in need.items() if k not in self._costed)
        if self.shape_bytes + new > self.shape_budget and self.shape_bytes:
            self.flush()
            new = sum(need.values())
        if new > self.shape_budget:  # this scene alone, in a world just emptied
            worst = max(need, key=need.get)  # type: ignore[arg-type]
            raise AssetError(f"one scene needs {new / 2**20:.1f} MB of mesh data and renderer=egl holds "
                             f"{self.shape_budget / 2**20:.1f} MB (`{worst[1]}` has {need[worst] // SHAPE_BYTES_PER_TRIANGLE} "
                             f"triangles); use renderer=tiny, fewer scale_bins or textures for it, or a mesh with fewer triangles.")
        self._costed |= set(need)
        self.shape_bytes += new

    def flush(self) -> None:
        """Drop every body and shape (the client's resetSimulation); pools, grounds and tints refill on demand."""
        self.client.resetSimulation()
        self.pool.clear()
        self.active = []
        self._tinted.clear()
        self.mesh_of.clear()
        self._shapes.clear()
        self._grounds.clear()
        self._ground_bodies = [None, None]
        self._staged = None
        self._costed.clear()
        self.shape_bytes = 0
        self.flushes += 1


class Renderer:
    """Renders the staged render world from a camera. Subclasses pick PyBullet's renderer."""

    name = "base"
    pybullet_renderer = p.ER_TINY_RENDERER
    # Whether frames are drawn off this process's CPU cores (a GPU), so that drawing the next one ahead of time
    # (submit) costs no core: run.render_each draws ahead where this holds or a core is free
    offloads = False

    def attach(self, world: RenderWorld) -> None:
        """Prepare ``world``'s client for this renderer (load plugins, warm up)."""

    def close(self) -> None:
        """Release what the renderer holds beside the world (a GL context)."""

    def raw(self, world: RenderWorld, cam: Camera, light: Light, light_distance: float | None = None,
            flags: int = p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PyBullet's frame: RGBA, depth buffer and segmentation (``flags``: benchmarks/egl_frame.py prices the others)."""
        view = p.computeViewMatrix(cam.eye, cam.target, cam.up)
        # Light arguments are sticky in PyBullet: pass every one of them on every call.
        _, _, rgba, depth, seg = world.client.getCameraImage(
            cam.width, cam.height, viewMatrix=view, projectionMatrix=projection_matrix(cam),
            lightDirection=list(light.direction), lightColor=list(light.color),
            lightDistance=light.distance if light_distance is None else light_distance,
            shadow=int(light.shadow), lightAmbientCoeff=light.ambient, lightDiffuseCoeff=light.diffuse,
            lightSpecularCoeff=light.specular, renderer=self.pybullet_renderer,
            flags=flags)
        return (np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4), np.asarray(depth, np.float32).reshape(cam.height, cam.width),
                np.asarray(seg, np.int32).reshape(cam.height, cam.width))

    def submit(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Callable[[], Frame]:
        """Start drawing the staged scene; the returned call gives its :meth:`render` frame. The render world may be
        staged for the next scene once this returns. A renderer that draws asynchronously (``renderer=gl``) returns
        while the frame is still being drawn, so the caller's work on the previous image overlaps it; PyBullet's
        renderers draw inside one call that holds the interpreter, so here the frame is done before this returns.
        At most one submitted frame is outstanding: call the result before the next submit."""
        frame = self.render(world, cam, light, depth)
        return lambda: frame

    def render(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Frame:
        """RGB, metric depth (None unless ``depth``) and the instance map of the staged scene."""
        backdrop = world.frame(cam)
        rgba, dbuf, seg = self.raw(world, cam, light, shadow_distance(cam, backdrop))
        rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # a copy in one pass: 70x faster than ascontiguousarray(rgba[..., :3])
        empty = seg < 0  # nothing drawn: only past the backdrop (an eye higher than ~0.8 far)
        rgb[empty] = BACKGROUND
        z = metric_depth(dbuf, cam, empty) if depth else None
        # Body id -> instance through the table; "nothing drawn" (-1) becomes 0xFFFFFF under the mask and, like any id
        # past the table, lands in its last slot, which is always -1.
        lut = world.lut
        instance = lut[np.minimum(seg & 0xFFFFFF, len(lut) - 1)]
        return Frame(rgb=rgb, depth=z, instance=instance, camera=cam, world_to_cam=world_to_cam(cam))


class TinyRenderer(Renderer):
    name = "tiny"
    pybullet_renderer = p.ER_TINY_RENDERER


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
        # A cached "yes" can be wrong in ways its fingerprint cannot see, and a plugin that fails ends this process:
        # the marker tells the next run to probe in a throwaway process again (eglprobe's docstring)
        with eglprobe.loading():
            world.client.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin")
            cam = Camera(64, 64, 64, 64, 32, 32, (0, 0, 1), (0, 0, 0), (0, 1, 0), 0.1, 2)
            light = Light((0, 0, 1), (1, 1, 1), 10, 0.5, 0.5, 0.1, True)
            for _ in range(2):  # the first two frames after loading lack shadows
                self.raw(world, cam, light)
        world.shape_budget = EGL_SHAPE_BUDGET

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
        os.environ["LP_NUM_THREADS"] = str(gl_threads(processes))


def share_cv_threads(processes: int) -> int:
    """OpenCV runs its parallel loops (the sensor model's blurs and filters, colour conversions) on a pool of one thread
    per core in every process: N rendering processes on N cores would run N pools of N threads, each loop waiting for
    its slowest thread while the others' work preempts it. Give each process its share of the cores, as Mesa's raster
    threads get (:func:`share_software_gl`); the pixels are the same whatever the count. Returns the count before, for a
    caller that renders in its own process (a test session, a notebook) to put back. OpenCV's own variable
    (OPENCV_FOR_THREADS_NUM), where the user set it, wins."""
    import cv2

    before = cv2.getNumThreads()
    if processes > 1 and "OPENCV_FOR_THREADS_NUM" not in os.environ:
        from .train.threads import usable_cores  # no torch: the affinity mask, capped by a cgroup quota

        cv2.setNumThreads(max(1, usable_cores() // processes))
    return before


# ---------------------------------------------------------------------------- renderer=auto
_SPEED_PROBE = r"""
import json, os, sys, tempfile, time, importlib.util
from pathlib import Path
import numpy as np, cv2, pybullet as p
from simgen import assets
from simgen.render import Box, box_obj
w, h, egl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
tex = Path(tempfile.mkdtemp()) / "probe.png"
cv2.imwrite(str(tex), np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
c = p.connect(p.DIRECT)
floor = assets.baked_obj(box_obj(Box(half=4.0, height=0.0, tile=0.5)), tex, (1.0, 1.0, 1.0))
p.createMultiBody(0, -1, p.createVisualShape(p.GEOM_MESH, fileName=str(floor), physicsClientId=c), physicsClientId=c)
die = assets.baked_obj(assets.procedural_obj("die"), tex, (0.04, 0.04, 0.04))
vs = p.createVisualShape(p.GEOM_MESH, fileName=str(die), physicsClientId=c)
rng = np.random.default_rng(1)
for _ in range(16):
    p.createMultiBody(0, -1, vs, basePosition=[*rng.uniform(-0.2, 0.2, 2), 0.02], physicsClientId=c)
view = p.computeViewMatrix([0.3, -0.4, 0.6], [0, 0, 0], [0, 0, 1])
proj = p.computeProjectionMatrixFOV(55, w / h, 0.1, 4.0)
def frame(r):
    t = time.perf_counter()
    p.getCameraImage(w, h, view, proj, lightDirection=[0.3, 0.2, 1], lightDistance=0.8, shadow=1, renderer=r,
                     flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX, physicsClientId=c)
    return time.perf_counter() - t
def speed(r):
    frame(r); frame(r)  # the first frames upload meshes and textures
    return 1e3 * float(np.median([frame(r) for _ in range(5)]))
out = {"tiny_ms": speed(p.ER_TINY_RENDERER)}
if egl:
    p.loadPlugin(importlib.util.find_spec("eglRenderer").origin, "_eglRendererPlugin", physicsClientId=c)
    out["egl_ms"] = speed(p.ER_BULLET_HARDWARE_OPENGL)
print("SIMGEN_SPEED " + json.dumps(out))
"""

SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "lavapipe", "software")


def gl_threads(processes: int) -> int:
    """Raster threads each of ``processes`` rendering processes gets from Mesa (see share_software_gl)."""
    from .train.threads import usable_cores  # no torch: the affinity mask, capped by a cgroup quota

    if os.environ.get("LP_NUM_THREADS", "").isdigit():
        return int(os.environ["LP_NUM_THREADS"])
    return max(1, usable_cores() // max(1, processes))


def choose_renderer(width: int, height: int, processes: int = 1, device: int | None = None,
                    assets: tuple[Path, ...] = ()) -> tuple[str, str]:
    """``renderer=auto``: the fastest renderer that works here, as (name, one-line reason).

    simgen's GL renderer (``gl``) wherever it can start and a hardware-accelerated EGL would be chosen, or EGL on Mesa
    would (it draws the same frame in one pass where PyBullet's plugin takes three: on an H200 1.6-1.8x the images/s
    of ``egl`` end to end, on llvmpipe 2.5x the frame rate), and at sizes above EGL's 1024x768 buffer. Else as before:
    EGL on a GPU; EGL on Mesa's software rasterizer only where a probe (a textured floor, 16 textured cubes, shadows,
    at the run's size and with the raster threads each worker will have) draws faster than TinyRenderer; else
    TinyRenderer. The probe's verdict is kept in the cache folder per machine, size and thread count, so repeated
    runs (and every worker) agree without paying for it again. Labels agree between all three within a pixel.
    ``assets``: the scene's asset files; one the GL renderer cannot draw (a URDF's Collada visual) keeps PyBullet's."""
    name, note = _choose_pybullet_renderer(width, height, processes, device)
    if name == "tiny" and not note.startswith("EGL renders at most"):
        return name, note
    from .glrender import gl_cannot_draw, probe_gl

    why = gl_cannot_draw(assets)
    if why:
        return name, f"{note}; not simgen's GL renderer: {why}"

    try:
        gl = probe_gl(device)
    except RendererUnavailable:
        return name, note
    if name == "tiny":
        return "gl", f"simgen's GL renderer on {gl.split(' (')[0]}: {note}, and it has no such limit"
    return "gl", f"simgen's GL renderer on {gl.split(' (')[0]}, one pass where PyBullet's EGL plugin takes three ({note})"


def _choose_pybullet_renderer(width: int, height: int, processes: int = 1, device: int | None = None) -> tuple[str, str]:
    """Between PyBullet's two renderers (see :func:`choose_renderer`)."""
    import platform

    if width > EGL_MAX[0] or height > EGL_MAX[1]:
        return "tiny", f"EGL renders at most {EGL_MAX[0]}x{EGL_MAX[1]}"
    try:
        vendor = os.environ.get(f"SIMGEN_EGL_OK_{device}") or probe_egl(device)
    except RendererUnavailable as e:
        return "tiny", f"EGL unavailable ({str(e).split(';')[0].removeprefix('renderer=egl: ')})"
    if not any(s in vendor.lower() for s in SOFTWARE_GL):
        return "egl", f"EGL on {vendor}"
    threads = gl_threads(processes)
    key = f"{platform.node()}|{vendor}|{width}x{height}|threads={threads}|pybullet={p.getAPIVersion()}"
    cache = cache_dir() / "renderer-auto.json"
    with _probe_lock(cache):  # concurrent runs (the shards of one -m sweep) wait for one verdict instead of each timing
        speed = _probe_speed(cache, key, width, height, threads, device)  # its own probe: two close timings could differ
    if speed is None:
        return "tiny", "the EGL speed probe failed"
    tiny, egl, gl = speed["tiny_ms"], speed["egl_ms"], vendor.split(" (")[0]
    if egl < tiny:
        return "egl", f"EGL on {gl} draws a {width}x{height} probe in {egl:.0f} ms vs TinyRenderer {tiny:.0f} ms"
    return "tiny", f"TinyRenderer draws a {width}x{height} probe in {tiny:.0f} ms vs EGL on {gl} {egl:.0f} ms"


@contextlib.contextmanager
def _probe_lock(cache: Path):
    """An exclusive lock beside the probe's cache file (released when the process ends, however it ends). Where none
    can be had (a read-only cache folder; a home on NFS without locks: ENOLCK) the probe runs unlocked, as it did."""
    import fcntl

    f = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        f = open(cache.with_suffix(".lock"), "a")
        fcntl.flock(f, fcntl.LOCK_EX)
    except OSError:
        if f is not None:
            f.close()
        f = None
    try:
        yield
    finally:
        if f is not None:
            f.close()


PROBE_RETRY_S = 600  # a failed speed probe is taken as the answer for this long, then tried again


def _probe_speed(cache: Path, key: str, width: int, height: int, threads: int, device: int | None) -> dict | None:
    """The cached probe timings for ``key``, timed now (and cached) where there are none; None when the probe fails."""
    import json

    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    speed = known.get(key)
    if isinstance(speed, dict) and time.time() - float(speed.get("failed_at", 0)) < PROBE_RETRY_S:
        return None  # failed moments ago: the runs waiting on the lock do not each pay for (or hang in) it again
    if not isinstance(speed, dict) or not {"tiny_ms", "egl_ms"} <= speed.keys():
        env = dict(os.environ, LP_NUM_THREADS=str(threads))
        if device is not None:
            env["EGL_VISIBLE_DEVICES"] = str(device)
        try:
            r = subprocess.run([sys.executable, "-c", _SPEED_PROBE, str(width), str(height), "1"], capture_output=True,
                               text=True, timeout=300, env=env)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("SIMGEN_SPEED ")]
            speed = json.loads(line[-1].split(" ", 1)[1]) if line else None
        except subprocess.TimeoutExpired:
            speed = None
        if not speed or "egl_ms" not in speed:
            known[key] = {"failed_at": time.time()}
            with contextlib.suppress(OSError):
                atomic_write_bytes(cache, json.dumps(known, indent=1).encode())
            return None
        known[key] = speed
        with contextlib.suppress(OSError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache, json.dumps(known, indent=1).encode())
    return speed


def make_renderer(name: str, device: int | None = None) -> Renderer:
    if name == "tiny":
        return TinyRenderer()
    if name == "egl":
        return EglRenderer(device)
    if name == "gl":
        from .glrender import GLRenderer

        return GLRenderer(device)
    raise ConfigError(f"unknown renderer `{name}`; use auto, tiny, egl or gl.")
