"""``renderer=gl``: simgen's own OpenGL renderer (moderngl on an EGL context: the GPU with the NVIDIA driver, llvmpipe
with Mesa). It draws the same render world as PyBullet's renderers -- the pooled bodies, textures, tints and poses of
the render client; each mesh once from its source OBJ, with the scale and offset PyBullet's renderers need baked into a
copy per (scale, texture) put in its transform instead -- but in one pass that writes colour and the body id side by side
(two attachments of one framebuffer), with the image rows already top-down, so a frame is one draw and two
``glReadPixels`` straight into the numpy arrays that become the frame.

Why: PyBullet's EGL plugin draws a shadow pass, the colour pass and a second full pass for the instance map, reads each
back and flips and resamples every pixel in a CPU loop. On an H100 that frame cost 10.7 ms of CPU in one process and
25-37 ms in each of 16-24 processes sharing the GPU, which held a 16-core machine to ~400 img/s (docs/throughput.md).

The look follows TinyRenderer's light model, the one the sim-to-real rounds (docs/sim2real.md) were measured with:
ambient + shadow x (diffuse x max(n.l, 0) + specular x (reflected z)^2) x light colour, each coefficient and the colour
from the view's randomized light, shadows darkening to 0.8 (PyBullet's EGL plugin ignores the colour and coefficients).
Textures are mipmapped, where TinyRenderer samples the nearest texel. The instance map is exact body ids, as
PyBullet's: it equals the EGL plugin's pixel for pixel on the scenes tested (tests/test_glrender.py).
"""
from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pybullet as p

from .errors import ConfigError, RendererUnavailable
from . import assets
from .render import BACKGROUND, SOFTWARE_GL, Renderer, RenderWorld, look_at, metric_depth, projection_matrix, world_to_cam
from .textures import render_texture
from .types import Camera, Frame, Light, MeshDraw



def shadow_size(width: int, height: int) -> int:
    """Shadow-map texels a side for a ``width`` x ``height`` image: the power of two at or above 1.5x its longer side,
    512 to 4096. The map spans 3x the camera's distance to its target (:meth:`GLRenderer._light_matrix`), where the
    image spans 1.0-1.4x it (fov_deg 55-70), so a texel covers ~1.2-1.6 px there: 1024 at 640x480, 2048 at 1280x960.
    A fixed 2048 cost llvmpipe ~2.5 ms of CPU a shadowed 640x480 frame over 1024 (clearing and rasterizing 4M texels,
    18% of the frame) for shadow edges finer than the image's pixels; on a GPU it costs little either way."""
    return int(min(4096, max(512, 1 << math.ceil(math.log2(1.5 * max(width, height))))))

_VERTEX = """
#version 330
uniform mat4 model;
uniform mat3 normal_matrix;
uniform mat4 view_proj;
uniform mat4 light_vp;
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
out vec3 v_normal;
out vec2 v_uv;
out vec4 v_light;
void main() {
    vec4 world = model * vec4(in_pos, 1.0);
    v_normal = normal_matrix * in_normal;  // model may scale a source mesh, unevenly for a box
    v_uv = in_uv;
    v_light = light_vp * world;
    gl_Position = view_proj * world;
}
"""

_FRAGMENT = """
#version 330
uniform sampler2D tex;
uniform sampler2DShadow shadow_map;
uniform vec4 color;
uniform vec3 light_dir;
uniform vec3 light_color;
uniform float ambient;
uniform float diffuse;
uniform float specular;
uniform int body;
uniform int shadows;
in vec3 v_normal;
in vec2 v_uv;
in vec4 v_light;
layout(location = 0) out vec4 out_color;
layout(location = 1) out int out_id;
void main() {
    vec3 base = color.rgb * texture(tex, v_uv).rgb;
    vec3 n = normalize(v_normal);
    vec3 l = normalize(light_dir);
    float nl = dot(n, l);
    // TinyRenderer's light model, which honours the light's colour and coefficients (randomization.light): the
    // specular term takes the reflected light's world z with exponent 2, as TinyRenderer does
    float spec = pow(max(normalize(2.0 * nl * n - l).z, 0.0), 2.0);
    float lit = 1.0;
    if (shadows == 1) {
        vec3 s = v_light.xyz / v_light.w * 0.5 + 0.5;
        // a slope-scaled bias keeps lit faces free of shadow acne
        float bias = 0.0004 + 0.0015 * (1.0 - clamp(abs(nl), 0.0, 1.0));
        lit = 0.8 + 0.2 * texture(shadow_map, vec3(s.xy, s.z - bias));  // TinyRenderer: 0.8 in shadow
    }
    vec3 rgb = base * (ambient + lit * (diffuse * max(nl, 0.0) + specular * spec) * light_color);
    out_color = vec4(min(rgb, vec3(1.0)), 1.0);
    out_id = body + 1;  // 0 is "nothing drawn": an integer attachment clears to zero
}
"""

_DEPTH_VERTEX = """
#version 330
uniform mat4 model;
uniform mat4 light_vp;
in vec3 in_pos;
void main() { gl_Position = light_vp * model * vec4(in_pos, 1.0); }
"""

_DEPTH_FRAGMENT = """
#version 330
void main() {}
"""


def _gl_matrix(m: np.ndarray) -> bytes:
    """A row-major numpy 4x4 as the column-major float32 bytes GLSL reads."""
    return np.ascontiguousarray(m.T, np.float32).tobytes()


def _translation(t) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = t
    return m


def _pose_matrix(pos, orn) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.array(p.getMatrixFromQuaternion(orn)).reshape(3, 3)
    m[:3, 3] = pos
    return m


def _numbers(lines: list[str], k: int) -> np.ndarray:
    """The first ``k`` numbers after the keyword of each line, as an Nx``k`` array: one C-level parse of the joined
    text where every line has exactly ``k`` (the usual case), else line by line."""
    if lines and all(len(ln.split()) == k + 1 for ln in lines):
        try:  # np.fromstring raises (numpy 2) or stops early (numpy 1, caught by the size check) on a non-number
            flat = np.fromstring(" ".join(ln[ln.index(" "):] for ln in lines), sep=" ")
            if flat.size == k * len(lines):
                return flat.reshape(-1, k)
        except ValueError:
            pass
    rows = []
    for ln in lines:  # a trailing comment, extra values (w, vertex colours) or a short line ("vt 0.5")
        vals = []
        for tok in ln.split("#")[0].split()[1:k + 1]:
            try:
                vals.append(float(tok))
            except ValueError:
                break
        rows.append(vals + [0.0] * (k - len(vals)))
    return np.array(rows, np.float64).reshape(-1, k)


def _triangle_corners(faces: list[str]) -> np.ndarray | None:
    """Corner indices (v, vt, vn; 0-based, -1 where absent) of face lines that are all triangles written alike with
    positive indices ("f 1 2 3", "f 1/1 2/2 3/3", "f 1//1 ...", "f 1/1/1 ..."): one vectorized parse. None otherwise,
    for the general loop (polygons, negative indices, mixed forms)."""
    first = faces[0].split()[1:] if faces else []
    if len(first) != 3 or "-" in "".join(faces) or "#" in "".join(faces):
        return None
    slashes, double = first[0].count("/"), "//" in first[0]
    # every line alike, checked line by line (totals could cancel out between lines written differently)
    if not all(len(f.split()) == 4 and f.count("/") == 3 * slashes and f.count("//") == (3 if double else 0) for f in faces):
        return None
    text = " ".join(f[2:] for f in faces)
    try:
        nums = np.fromstring(text.replace("//", "/0/").replace("/", " "), sep=" ", dtype=np.int64)
    except ValueError:
        return None
    per = slashes + 1
    if nums.size != 3 * per * len(faces):  # a line with more or fewer than three corners
        return None
    c = np.full((len(faces) * 3, 3), 0, np.int64)
    c[:, :per] = nums.reshape(-1, per)
    return c - 1  # 0 (absent) becomes -1


def obj_buffers(path: Path, text: str | None = None) -> tuple[np.ndarray, Path | None]:
    """An OBJ as flat triangles, one row per corner (x, y, z, nx, ny, nz, u, v) float32, and the texture its first
    material maps (``map_Kd``; PyBullet reads the first material only). Not cached: the renderer keeps each mesh on the
    GPU once, and a dense scan's arrays are tens of MB. Polygons are fanned; faces without normals get
    their face normal, faces without UVs (0, 0). v is flipped: OBJ counts it from the image's bottom row. Triangle
    meshes written alike take a vectorized path (a 240k-triangle scan: well under a second); others a line loop.
    ``text``: the OBJ's lines as given (a mesh given box-projected UVs), not the file's; its material is still the file's."""
    from .assets import _face_indices, _material_file

    if text is None:
        with open(path, errors="replace") as f:
            text = f.read()
    lines = text.splitlines()
    v_lines = [ln for ln in lines if ln.startswith("v ")]
    f_lines = [ln for ln in lines if ln.startswith("f ")]
    v = _numbers(v_lines, 3)
    vt = _numbers([ln for ln in lines if ln.startswith("vt ")], 2)
    vn = _numbers([ln for ln in lines if ln.startswith("vn ")], 3)
    fast = _triangle_corners(f_lines)
    if fast is not None:
        corners = fast
    else:  # the general loop: indices count from the vertices defined so far, so walk the file in order
        seen = {"v ": 0, "vt": 0, "vn": 0}
        rows: list[tuple[int, int, int]] = []
        for line in lines:
            head = line[:2]
            if head in seen:
                seen[head] += 1
            elif head == "f ":
                vi, ti, ni = (_face_indices(line, seen[kind], part) for part, kind in enumerate(("v ", "vt", "vn")))
                for k in range(1, len(vi) - 1):
                    rows += [(vi[0], ti[0], ni[0]), (vi[k], ti[k], ni[k]), (vi[k + 1], ti[k + 1], ni[k + 1])]
        corners = np.asarray(rows, np.int64).reshape(-1, 3)
    c = corners
    P = v
    ok = ((c[:, 0] >= 0) & (c[:, 0] < len(P))).reshape(-1, 3).all(axis=1).repeat(3)
    c = c[ok]
    pos = P[c[:, 0]]
    tri = pos.reshape(-1, 3, 3)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_n /= np.maximum(np.linalg.norm(face_n, axis=1, keepdims=True), 1e-12)
    normals = face_n.repeat(3, axis=0)
    N = vn
    has_n = (c[:, 2] >= 0) & (c[:, 2] < len(N))
    normals[has_n] = N[c[has_n, 2]]
    uv = np.zeros((len(c), 2))
    T = vt
    has_t = (c[:, 1] >= 0) & (c[:, 1] < len(T))
    uv[has_t] = T[c[has_t, 1]]
    uv[:, 1] = 1.0 - uv[:, 1]
    texture = None
    mtl = _material_file(path)
    if mtl is not None:  # the first material's map only (baked_obj uses it, and PyBullet reads no other), read as the
        maps = assets.texture_maps(path, mtl, first_only=True)  # asset check and the baked copies read it
        texture = maps[0][1] if maps else None
    return np.hstack([pos, normals, uv]).astype(np.float32), texture


def _flat(mesh, scale) -> np.ndarray:
    """A simgen.assets.MeshData as flat corner rows (x, y, z, nx, ny, nz, u, v), its vertices scaled per axis."""
    idx = np.asarray(mesh.faces, np.int64).reshape(-1, 3)
    uv = mesh.vt[idx[:, 1]].copy()
    uv[:, 1] = 1.0 - uv[:, 1]
    return np.hstack([mesh.v[idx[:, 0]] * scale, mesh.vn[idx[:, 2]], uv]).astype(np.float32)


@functools.lru_cache(maxsize=64)
def primitive_buffers(geom: int, dims: tuple[float, ...]) -> np.ndarray:
    """A URDF's primitive visual (box, sphere, cylinder, capsule) as flat corner rows, from PyBullet's
    getVisualShapeData dimensions: box full sizes; sphere (radius,); cylinder and capsule (length, radius)."""
    from .assets import _cube, _cylinder, _sphere

    if geom == p.GEOM_BOX:
        return _flat(_cube(False), np.asarray(dims[:3]))
    if geom == p.GEOM_SPHERE:
        return _flat(_sphere(), 2 * dims[0])
    if geom == p.GEOM_CYLINDER:
        length, r = dims[:2]
        return _flat(_cylinder(), np.array([2 * r, 2 * r, length]))
    if geom == p.GEOM_CAPSULE:  # a sphere split at its equator, the halves moved apart: the band between is the side
        length, r = dims[:2]
        sphere = _sphere()
        v = sphere.v * 2 * r
        v[:, 2] += np.where(sphere.v[:, 2] >= 0, length / 2, -length / 2)
        return _flat(type(sphere)(v, sphere.vt, sphere.vn, sphere.faces), 1.0)
    raise ConfigError(f"renderer=gl cannot draw PyBullet geometry type {geom} (a URDF plane?); use renderer=egl for this asset.")


class _Mesh:
    """One mesh on the GPU: its vertex array for the colour pass, one for the shadow pass, and its texture."""

    def __init__(self, gl: GLRenderer, path: Path | None, primitive: tuple | None = None, text: str | None = None) -> None:
        if path is not None:
            data, texture = obj_buffers(path, text)
            if not len(data):
                raise ConfigError(f"renderer=gl: mesh `{path}` has no faces it can draw; check the OBJ, or use renderer=tiny.")
        else:
            data, texture = primitive_buffers(*primitive), None
        ctx = gl.ctx
        self.vbo = ctx.buffer(data.tobytes())
        self.vao = ctx.vertex_array(gl.program, [(self.vbo, "3f 3f 2f", "in_pos", "in_normal", "in_uv")])
        self.depth_vao = ctx.vertex_array(gl.depth_program, [(self.vbo, "3f 20x", "in_pos")])
        self._gl, self._texture_file = gl, texture

    @functools.cached_property
    def texture(self):
        """The mesh's own texture on the GPU (the BMP copy: same pixels), loaded when first drawn with it: a mesh shown
        only with textures from a bank never uploads its own."""
        return self._gl.texture(render_texture(self._texture_file) if self._texture_file is not None else None)


class GLRenderer(Renderer):
    """Colour and instance ids in one pass of simgen's own shaders; see the module docstring."""

    name = "gl"

    def __init__(self, device: int | None = None) -> None:
        self.device = device
        self.vendor = ""
        self.ctx = None
        self._meshes: dict[tuple, _Mesh] = {}  # (source path, box-projected UVs) or a URDF primitive
        self._textures: dict[Path | None, object] = {}
        self._bodies: dict[int, list[tuple[_Mesh, np.ndarray, object, np.ndarray, int, tuple]]] = {}
        self._inertial: dict[int, np.ndarray] = {}
        self._flushes = -1
        self._fbos: dict[tuple[int, int], tuple] = {}
        self._submitted = 0  # frames drawn: a submitted frame's reader checks that no later draw has drawn over it
        self._gl_flush: Callable[[], None] | None = None

    # ------------------------------------------------------------------ set-up
    def attach(self, world: RenderWorld) -> None:
        self.ctx = _context(self.device)
        self.ctx.__enter__()  # current from here; render() makes it current again around each frame
        self.vendor = f"{self.ctx.info['GL_RENDERER']} ({self.ctx.info['GL_VERSION']})"
        self.offloads = not any(s in self.vendor.lower() for s in SOFTWARE_GL)  # a GPU draws; llvmpipe draws on our cores
        self.program = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.depth_program = self.ctx.program(vertex_shader=_DEPTH_VERTEX, fragment_shader=_DEPTH_FRAGMENT)
        self.program["tex"].value = 0
        self.program["shadow_map"].value = 1
        self._shadow_maps: dict[int, tuple] = {}  # texels a side -> (depth texture, framebuffer)
        self.white = self.ctx.texture((1, 1), 3, bytes([255, 255, 255]))
        world.pybullet_draws = False  # pooled mesh bodies come from world.mesh_of: no baked copies (RenderWorld)

    def texture(self, path: Path | None):
        """The GL texture of an image file (mipmapped, repeating), loaded once; white where there is none."""
        if path is None:
            return self.white
        tex = self._textures.get(path)
        if tex is None:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            else:  # a format OpenCV has no reader for (TGA), which PyBullet's loader reads
                try:
                    from PIL import Image

                    with Image.open(path) as im:
                        img = np.asarray(im.convert("RGB"))
                except Exception:
                    img = None
            if img is None:  # PyBullet draws a mesh whose texture is missing untextured
                tex = self.white
            else:
                img = np.ascontiguousarray(img)
                tex = self.ctx.texture((img.shape[1], img.shape[0]), 3, img.tobytes(), alignment=1)
                tex.build_mipmaps()
                tex.filter = (self.ctx.LINEAR_MIPMAP_LINEAR, self.ctx.LINEAR)
            self._textures[path] = tex
        return tex

    def _primitive(self, primitive: tuple) -> _Mesh:
        """A URDF's primitive visual (geometry type, PyBullet's dimensions) on the GPU, once."""
        mesh = self._meshes.get(primitive)
        if mesh is None:
            mesh = self._meshes[primitive] = _Mesh(self, None, primitive)
        return mesh

    def _source_mesh(self, draw: MeshDraw) -> _Mesh:
        """A pooled body's source OBJ on the GPU, once for every scale and texture it is shown at: with the UVs
        ``assets.baked_obj`` would write (box-projected where a texture is mapped onto a mesh without any)."""
        box_uv = assets.box_uv_needed(draw.mesh, draw.texture)
        key = (str(draw.mesh), box_uv)
        mesh = self._meshes.get(key)
        if mesh is None:
            mesh = self._meshes[key] = _Mesh(self, draw.mesh, text=assets.box_uv_text(draw.mesh) if box_uv else None)
        return mesh

    def _shown(self, draw: MeshDraw, local: np.ndarray) -> tuple[_Mesh, np.ndarray, object, np.ndarray]:
        """(mesh, transform, texture, normal matrix) of ``draw``'s source mesh placed by the rigid ``local``, with the
        scale and offset a baked copy would hold in the transform. The normal matrix is the transform's inverse
        transpose: under an uneven scale (a URDF's ``<mesh scale="a b c">``) normals turn as the surface does, where a
        baked copy keeps the source's normals as they were (TinyRenderer and EGL draw those)."""
        mesh = self._source_mesh(draw)
        transform = local @ np.diag([*draw.scale, 1.0]) @ _translation(-np.asarray(draw.offset))
        texture = self.texture(render_texture(draw.texture)) if draw.texture is not None else mesh.texture
        return mesh, transform, texture, local[:3, :3] @ np.diag(1.0 / np.asarray(draw.scale))

    def _parts(self, world: RenderWorld, body: int) -> list[tuple[_Mesh, np.ndarray, object, np.ndarray, int, tuple]]:
        """A body's visual shapes: (mesh, transform from its link frame, texture, normal matrix of the transform, link,
        own rgba), from the world's record of a pooled mesh body (``mesh_of``) or read from PyBullet (a URDF's links),
        once. Meshes are drawn from their source with the scale (and a mesh body's offset) in the transform."""
        if self._flushes != world.flushes:  # the world dropped every body: ids are reused for other shapes
            self._bodies.clear()
            self._inertial.clear()
            self._flushes = world.flushes
        parts = self._bodies.get(body)
        if parts is None and body in world.mesh_of:
            parts = self._bodies[body] = [(*self._shown(world.mesh_of[body], np.eye(4)), -1, (1.0, 1.0, 1.0, 1.0))]
        if parts is None:
            parts = []
            for shape in world.client.getVisualShapeData(body):
                link, geom, dims, file, lpos, lorn = shape[1:7]
                if geom == p.GEOM_MESH:
                    name = file.decode() if isinstance(file, bytes) else file
                    obj = assets.readable_obj(Path(name))  # an STL or Collada file is drawn from its OBJ conversion
                    if obj is None:
                        raise ConfigError(f"renderer=gl cannot read `{name}`, a URDF's visual mesh; export it again as OBJ, or use "
                                          "renderer=tiny.")
                    # at the scale PyBullet reports: the URDF's <mesh scale> times the body's globalScaling
                    draw = MeshDraw(obj, None, tuple(float(x) for x in dims[:3]), (0.0, 0.0, 0.0))  # type: ignore[arg-type]
                    parts.append((*self._shown(draw, _pose_matrix(lpos, lorn)), link, tuple(shape[7])))
                    continue
                mesh = self._primitive((geom, tuple(round(float(x), 9) for x in dims)))
                local = _pose_matrix(lpos, lorn)  # rigid: its rotation is its own normal matrix
                parts.append((mesh, local, mesh.texture, local[:3, :3], link, tuple(shape[7])))
            self._bodies[body] = parts
        return parts

    # ------------------------------------------------------------------ drawing
    def _link_frame(self, c, body: int, link: int) -> np.ndarray:
        """World pose of a body's link frame, which its visual frames hang off. For the base PyBullet keeps the
        centre-of-mass frame: undo the base's inertial offset (a URDF's <inertial><origin>; the teddy's is 9 cm)."""
        if link != -1:
            return _pose_matrix(*c.getLinkState(body, link)[4:6])
        inverse = self._inertial.get(body)
        if inverse is None:
            inverse = self._inertial[body] = np.linalg.inv(_pose_matrix(*c.getDynamicsInfo(body, -1)[3:5]))
        return _pose_matrix(*c.getBasePositionAndOrientation(body)) @ inverse

    def _draw_list(self, world: RenderWorld) -> list[tuple[_Mesh, np.ndarray, tuple, int, bool, object, np.ndarray]]:
        """(mesh, model matrix, rgba, body, casts a shadow, texture, normal matrix) for every body shown."""
        c = world.client
        out = []
        grounds = set(world.ground_ids)
        for body in [*world.active, *world.ground_ids]:
            rgba = world._tinted.get(body)  # RenderWorld tints every link of a body alike
            frames: dict[int, np.ndarray] = {}
            for mesh, local, texture, normals, link, own in self._parts(world, body):
                if link not in frames:
                    frames[link] = self._link_frame(c, body, link)
                frame = frames[link]
                # link frames are rigid, so the normal matrix (inverse transpose) of frame @ local is R @ local's
                out.append((mesh, frame @ local, rgba or own, body, body not in grounds, texture, frame[:3, :3] @ normals))
        return out

    def _targets(self, w: int, h: int):
        got = self._fbos.get((w, h))
        if got is None:
            color = self.ctx.renderbuffer((w, h), 4)
            ids = self.ctx.renderbuffer((w, h), 1, dtype="i4")
            depth = self.ctx.depth_renderbuffer((w, h))
            got = self._fbos[(w, h)] = self.ctx.framebuffer(color_attachments=[color, ids], depth_attachment=depth)
        return got

    def _shadow_map(self, size: int) -> tuple:
        got = self._shadow_maps.get(size)
        if got is None:
            tex = self.ctx.depth_texture((size, size))
            tex.compare_func = "<="
            tex.repeat_x = tex.repeat_y = False
            got = self._shadow_maps[size] = (tex, self.ctx.framebuffer(depth_attachment=tex))
        return got

    def _light_matrix(self, cam: Camera, light: Light) -> np.ndarray:
        """Orthographic view-projection of the shadow map: along the light, over what the camera looks at."""
        target = np.asarray(cam.target, float)
        reach = 1.5 * max(float(np.linalg.norm(np.subtract(cam.eye, cam.target))), 0.3)
        d = np.asarray(light.direction, float)
        d = d / (np.linalg.norm(d) or 1.0)
        up = (0, 0, 1) if abs(d[2]) < 0.99 else (0, 1, 0)
        V = look_at(target + d * 2 * reach, target, up)
        n, f, r = 0.01, 4 * reach, reach
        P = np.array([[1 / r, 0, 0, 0], [0, 1 / r, 0, 0], [0, 0, -2 / (f - n), -(f + n) / (f - n)], [0, 0, 0, 1]])
        return P @ V

    def _draw(self, world: RenderWorld, cam: Camera, light: Light):
        """Draw the staged world; the framebuffer holds colour, body id + 1 (0: nothing) and depth."""
        ctx = self.ctx
        self._submitted += 1  # first: a draw that fails half-way, or raw()'s, has also drawn over the frame before it
        items = self._draw_list(world)
        shadows = bool(light.shadow)
        ctx.enable_only(ctx.DEPTH_TEST)  # no culling: the ground box is seen from inside, and y is flipped below
        shadow_tex, shadow_fbo = self._shadow_map(shadow_size(cam.width, cam.height))
        if shadows:
            lvp = self._light_matrix(cam, light)
            shadow_fbo.use()
            shadow_fbo.clear(depth=1.0)
            self.depth_program["light_vp"].write(_gl_matrix(lvp))
            for mesh, model, _, _, casts, _, _ in items:
                if casts:
                    self.depth_program["model"].write(_gl_matrix(model))
                    mesh.depth_vao.render()
            self.program["light_vp"].write(_gl_matrix(lvp))
        self.program["shadows"].value = int(shadows)
        fbo = self._targets(cam.width, cam.height)
        fbo.use()
        # Every attachment to zero first: moderngl clears an integer attachment with the clear colour's bits, so only
        # zeros give id 0 ("nothing drawn"). Then the colour attachment alone to the background colour.
        fbo.color_mask = ((True,) * 4, (True,) * 4)
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        fbo.color_mask = ((True,) * 4, (False,) * 4)
        fbo.clear(*(BACKGROUND / 255.0), 1.0, depth=1.0)
        fbo.color_mask = ((True,) * 4, (True,) * 4)
        # PyBullet's projection (a column-major list) with y flipped: row 0 of the framebuffer is the image's top row,
        # so the readback needs no flip
        P = np.diag([1.0, -1.0, 1.0, 1.0]) @ np.array(projection_matrix(cam)).reshape(4, 4).T
        self.program["view_proj"].write(_gl_matrix(P @ look_at(cam.eye, cam.target, cam.up)))
        self.program["light_dir"].value = tuple(float(x) for x in light.direction)
        self.program["light_color"].value = tuple(float(x) for x in light.color)
        for name in ("ambient", "diffuse", "specular"):
            self.program[name].value = float(getattr(light, name))
        shadow_tex.use(1)
        for mesh, model, rgba, body, _, texture, normals in items:
            texture.use(0)
            self.program["model"].write(_gl_matrix(model))
            self.program["normal_matrix"].write(_gl_matrix(normals))
            self.program["color"].value = tuple(float(x) for x in rgba)
            self.program["body"].value = int(body)
            mesh.vao.render()
        return fbo

    def _read(self, fbo, cam: Camera, depth: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        h, w = cam.height, cam.width
        rgb = np.empty((h, w, 3), np.uint8)
        fbo.read_into(rgb, components=3, attachment=0, alignment=1)
        ids = np.empty((h, w), np.int32)
        fbo.read_into(ids, components=1, attachment=1, alignment=1, dtype="i4")
        dbuf = None
        if depth:
            dbuf = np.empty((h, w), np.float32)
            fbo.read_into(dbuf, components=1, attachment=-1, alignment=1, dtype="f4")
        return rgb, ids, dbuf

    def raw(self, world: RenderWorld, cam: Camera, light: Light, light_distance: float | None = None,
            flags: int = p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The frame as PyBullet's renderers return it (RGBA, depth buffer, body ids with -1 for nothing), for the
        benchmarks that price a bare frame; ``light_distance`` and ``flags`` mean nothing here."""
        with self.ctx:  # moderngl draws into whichever context is current: another renderer's, or a probe's
            rgb, ids, dbuf = self._read(self._draw(world, cam, light), cam, True)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), dbuf, ids - 1

    def render(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Frame:
        return self.submit(world, cam, light, depth)()

    def submit(self, world: RenderWorld, cam: Camera, light: Light, depth: bool = True) -> Callable[[], Frame]:
        """Issue the frame's draw calls and flush them, and return without waiting: the GPU (or llvmpipe's raster
        threads) draws while the caller labels and writes the previous image; the returned call reads the frame back.
        Measured on llvmpipe (640x480, one process, interleaved with drawing and reading back in one go): 0.78-0.93x the
        wall time an image on pre-settled tabletop scenes, 0.84-0.98x on dice; the same bytes (docs/throughput.md)."""
        world.frame(cam)
        with self.ctx:  # moderngl draws into whichever context is current: another renderer's, or a probe's
            fbo = self._draw(world, cam, light)
            # A GPU driver may hold the commands in its buffer until something waits on them: hand them over now
            self._flush()
        # id + 1 -> instance through the table shifted by one: slot 0 ("nothing drawn") and every id past it are -1.
        # Taken now: the world may be staged for the next scene before this frame is read.
        lut = np.concatenate([[-1], world.lut]).astype(np.int32)
        ticket = self._submitted

        def frame() -> Frame:
            if self.ctx is None:
                raise RuntimeError("renderer=gl: the renderer was closed before its frame was read.")
            if ticket != self._submitted:  # one framebuffer: a later draw has drawn over this frame
                raise RuntimeError("renderer=gl: a frame was read after the next one was submitted; read each frame "
                                   "before submitting the next.")
            with self.ctx:
                rgb, ids, dbuf = self._read(fbo, cam, depth)
            z = metric_depth(dbuf, cam, ids == 0) if depth else None
            instance = np.take(lut, ids, mode="clip")  # one pass: clipping and looking up together
            return Frame(rgb=rgb, depth=z, instance=instance, camera=cam, world_to_cam=world_to_cam(cam))

        return frame

    def _flush(self) -> None:
        """glFlush (moderngl has only finish, which waits), found as glcontext finds GL functions; a no-op where
        neither library has it."""
        if self._gl_flush is None:
            self._gl_flush = _gl_proc("glFlush") or (lambda: None)
        self._gl_flush()

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()  # release what this context holds, not the current one's
            self.ctx.release()
            self.ctx = None


def _gl_proc(name: str) -> Callable[[], None] | None:
    """A GL entry point taking no arguments, looked up as glcontext's EGL backend looks them up for moderngl: in the
    GL library (GLCONTEXT_LINUX_LIBGL, else libGL.so.1), else through eglGetProcAddress of the EGL library
    (GLCONTEXT_LINUX_LIBEGL, else libEGL.so.1). None where neither has it."""
    import ctypes

    try:
        function = getattr(ctypes.CDLL(os.environ.get("GLCONTEXT_LINUX_LIBGL") or "libGL.so.1"), name)
        function.restype, function.argtypes = None, []
        return function
    except (OSError, AttributeError):
        pass
    try:
        egl = ctypes.CDLL(os.environ.get("GLCONTEXT_LINUX_LIBEGL") or "libEGL.so.1")
    except OSError:
        return None
    egl.eglGetProcAddress.restype = ctypes.c_void_p
    egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
    address = egl.eglGetProcAddress(name.encode())
    return ctypes.CFUNCTYPE(None)(address) if address else None


def _context(device: int | None):
    """A standalone OpenGL 3.3 context through EGL on ``device`` (an index into EGL's device list, as renderer.devices)."""
    try:
        import moderngl
    except ImportError:
        raise RendererUnavailable("renderer=gl needs moderngl (a dependency of simgen): pip install moderngl, or use renderer=egl.") from None
    kwargs: dict = {"backend": "egl"}
    if device is not None:
        kwargs["device_index"] = device
    try:
        return moderngl.create_standalone_context(require=330, **kwargs)
    except Exception as e:  # glcontext raises plain Exceptions: no libEGL, no such device, no GL 3.3
        raise RendererUnavailable(f"renderer=gl: no OpenGL 3.3 context through EGL here ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                                  "install Mesa's libegl1 or the GPU driver, check renderer.devices, or use renderer=tiny.") from None


def probe_gl(device: int | None = None, timeout: float = 60.0) -> str:
    """Whether renderer=gl can start here: a context is created and released in a throwaway process (so this process
    neither forks with a GL context already made, nor fixes Mesa's raster-thread count before share_software_gl has
    set it, nor dies with a broken driver). The GL renderer's name, kept in the environment for the manifest and for
    workers; a failure is RendererUnavailable with the reason."""
    import subprocess

    from . import eglprobe

    key = f"SIMGEN_GL_OK_{device}"
    if key in os.environ:
        return os.environ[key]
    proc = eglprobe.gl_started.pop(device, None) or eglprobe.gl_probe_process(device)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RendererUnavailable("renderer=gl: the GL probe hung; check the GPU driver, or use renderer=tiny.") from None
    lines = [ln for ln in out.splitlines() if ln.startswith("SIMGEN_GL")]
    last = lines[-1] if lines else f"SIMGEN_GL_FAIL the probe process ended with code {proc.returncode}"
    if last == "SIMGEN_GL_MISSING":
        raise RendererUnavailable("renderer=gl needs moderngl (a dependency of simgen): pip install moderngl, or use renderer=egl.")
    if last.startswith("SIMGEN_GL_FAIL"):
        raise RendererUnavailable(f"renderer=gl: no OpenGL 3.3 context through EGL here ({last.split(' ', 1)[1]}); "
                                  "install Mesa's libegl1 or the GPU driver, check renderer.devices, or use renderer=tiny.")
    os.environ[key] = last.split(" ", 1)[1]
    return os.environ[key]


def gl_cannot_draw(asset_paths) -> str | None:
    """Why renderer=gl cannot draw one of these assets (a URDF with a mesh it cannot read, or a plane visual), else None:
    ``renderer=auto`` then keeps PyBullet's renderers, which draw them."""
    import xml.etree.ElementTree as ET

    for path in asset_paths:
        if Path(path).suffix.lower() != ".urdf":
            continue
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError):
            continue  # validate() says what is wrong with it
        for visual in root.iter("visual"):
            for m in visual.iter("mesh"):
                name = m.get("filename", "")
                if assets.readable_obj(assets.urdf_mesh_path(Path(path).resolve(), name)) is None:  # found as PyBullet finds it
                    return f"`{path}` has a {Path(name).suffix or 'non-OBJ'} visual mesh simgen cannot read"
            if next(visual.iter("plane"), None) is not None:
                return f"`{path}` has a plane visual"
    return None
