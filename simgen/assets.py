"""Assets: what can be dropped into a scene, resolved from a name or a path.

Built-ins are procedural meshes written as OBJ (die, box, can, sphere, plane) and a few
pybullet_data models (duck, teddy, mug, lego, ...). A user's own ``.obj`` or ``.urdf`` path is an
asset too, so a new category needs overrides only; an STL, PLY, glTF/GLB, Collada or OFF file is converted once to an
OBJ (``converted_obj``). Texturing works by writing a copy of the OBJ whose material points at the texture: per-body
``changeVisualShape(textureUniqueId=...)`` is broken under EGL (bullet3 PR #4805), a per-texture mesh copy works under
both renderers.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AssetError, did_you_mean
from .textures import atomic_write_bytes, cache_dir, render_texture

# name -> path inside pybullet_data
PYBULLET_MODELS = {
    "duck": "duck_vhacd.urdf",
    "teddy": "teddy_vhacd.urdf",
    "mug": "objects/mug.urdf",
    "lego": "lego/lego.urdf",
    "soccerball": "soccerball.urdf",
    "jenga": "jenga/jenga.urdf",
    "domino": "domino/domino.urdf",
}
PROCEDURAL = ("die", "die_round", "box", "can", "sphere", "plane")


@dataclass(frozen=True)
class Asset:
    key: str
    kind: str  # "mesh" (OBJ, created with createVisualShape) or "urdf"
    path: Path
    collision: str  # "box" | "sphere" | "cylinder" | "mesh" | "urdf"
    points: np.ndarray  # Nx3 surface points in the link frame at scale 1 (for extents, amodal hulls)
    triangles: np.ndarray  # Tx3x3 visual triangles, link frame, scale 1 (for silhouettes)
    texturable: bool  # has UVs: random textures can be applied
    # Mesh units from the file's origin to its bounding-box centre, which becomes the object's origin (a user OBJ;
    # zero for built-ins and URDFs): CAD exports often sit far from their origin, which made the object's extents,
    # placement radius and centre of mass wrong (a 4 cm cube half a metre off its origin "measured" a metre).
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    own_texture: bool = False  # a user OBJ whose own material has a texture map: its look, kept untinted in hue
    own_color: tuple[float, float, float, float] | None = None  # a user OBJ's material colour (Kd), drawn when colours are not randomized
    source: Path | None = None  # the user's file in another format (STL, PLY, glTF...) that ``path`` was converted from

    @functools.cached_property
    def convex(self) -> bool:
        """Convex geometry: its projected hull is its silhouette (labels take the cheap, exact path)."""
        tris = self.triangles
        if len(tris) > CONVEX_FACES_CHECKED:
            # Faces x hull vertices grows with the square of a scan's density (a 60k-triangle ball took 37 s). The
            # largest faces (a CAD part's few big walls, its notches) and an even spread over the file (a scan's
            # dents): a concavity that matters to an outline has a large face or many faces
            area = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
            half = CONVEX_FACES_CHECKED // 2
            pick = np.union1d(np.argsort(-area, kind="stable")[:half], np.linspace(0, len(tris) - 1, half).astype(int))
            tris = tris[pick]
        return is_convex(tris, self.hull_points)  # a plane's extremes over the points lie on their hull

    @functools.cached_property
    def hull_points(self) -> np.ndarray:
        """``points`` that are vertices of their convex hull (Qhull): what projecting an object's outline needs. A
        scanned or CAD mesh has 10-100x more points than hull vertices; small meshes (every built-in) keep all."""
        return _hull_vertices(self.points) if len(self.points) > HULL_POINTS_FROM else self.points

    @functools.cached_property
    def outline_points(self) -> np.ndarray:
        """The vertices of ``points``' convex hull, for every mesh: what labels project per object and image (its
        outline's hull and extremes). A tabletop mesh keeps a quarter or less (duck 2,108 -> 538 points, teddy 1,261
        -> 132), which took labels from 2.68 to 1.75 ms an image with the same annotations (60 tabletop and 60 dice
        images compared). Found once per mesh and machine: the hull's vertex indices are kept in the cache folder,
        so a run does not import scipy (~0.3 s) for them again. ``hull_points`` (what physics builds bodies from)
        keeps every point of a small mesh, so no body changes. An object cut by the camera plane is outlined from
        ``hull_points`` instead (:func:`simgen.annotate.hull_uv`)."""
        if len(self.points) <= OUTLINE_ALL_UP_TO:
            return self.points
        return _hull_vertices(self.points)

    @functools.cached_property
    def collision_hull(self) -> np.ndarray | None:
        """A user OBJ's convex collision hull (hull vertices, scale 1, about the bounding-box centre) when PyBullet
        makes it one hull; None when it makes one hull per part (an OBJ with several objects or groups), when the
        hull is over PyBullet's vertex limit, or for an asset that is not a collision mesh. Physics builds each body
        from these vertices: PyBullet otherwise parses the OBJ file again for every body of every scene (0.9 s for
        a 240k-triangle scan)."""
        if self.collision != "mesh" or len(self.hull_points) > PYBULLET_MAX_VERTICES:
            return None
        return self.hull_points if pybullet_parts(self.path) == 1 else None

    @property
    def half_extents(self) -> np.ndarray:
        return np.maximum(np.abs(self.points).max(axis=0), 1e-4)

    @property
    def radius(self) -> float:
        return float(np.linalg.norm(self.points, axis=1).max())


# ---------------------------------------------------------------- OBJ geometry
@dataclass(frozen=True)
class MeshData:
    v: np.ndarray  # Nx3
    vt: np.ndarray  # Mx2
    vn: np.ndarray  # Kx3
    faces: tuple  # triangles of (v, vt, vn) index triples, 0-based

    def obj_text(self, mtl_name: str | None = None) -> str:
        lines = ["# written by simgen"]
        if mtl_name:
            lines += [f"mtllib {mtl_name}", "usemtl m"]
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in self.v]
        lines += [f"vt {u:.6f} {w:.6f}" for u, w in self.vt]
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in self.vn]
        lines += ["f " + " ".join(f"{a + 1}/{b + 1}/{c + 1}" for a, b, c in tri) for tri in self.faces]
        return "\n".join(lines) + "\n"


# Die faces: value -> (outward normal, u axis, v axis); opposite faces sum to seven.
DIE_FACES = {
    1: ((0, 0, 1), (1, 0, 0), (0, 1, 0)),
    6: ((0, 0, -1), (1, 0, 0), (0, -1, 0)),
    2: ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    5: ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    3: ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),
    4: ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
}


def _cube(atlas: bool) -> MeshData:
    """Unit cube (side 1). With ``atlas`` each face maps to its cell of a 3x2 atlas (die value v at
    column (v-1)%3, row (v-1)//3); otherwise every face spans the whole texture."""
    v, vt, vn, faces = [], [], [], []
    for value, (n, u, w) in DIE_FACES.items():
        n, u, w = (np.asarray(a, float) for a in (n, u, w))
        base = len(v)
        for su, sw in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            v.append(0.5 * n + 0.5 * su * u + 0.5 * sw * w)
            uu, ww = (su + 1) / 2, (sw + 1) / 2
            if atlas:
                col, row = (value - 1) % 3, (value - 1) // 3
                # small inset so that texture filtering never bleeds in the neighbour cell
                uu = (col + 0.02 + 0.96 * uu) / 3
                ww = 1 - (row + 0.02 + 0.96 * (1 - ww)) / 2
            vt.append((uu, ww))
        vn.append(n)
        ni = len(vn) - 1
        faces += [((base, base, ni), (base + 1, base + 1, ni), (base + 2, base + 2, ni)),
                  ((base, base, ni), (base + 2, base + 2, ni), (base + 3, base + 3, ni))]
    return MeshData(np.array(v), np.array(vt), np.array(vn), tuple(faces))


def _rounded_cube(radius: float = 0.1, bevel_rows: int = 3) -> MeshData:
    """Die with rounded edges and corners (side 1, edge radius ``radius``), UV-mapped like ``_cube``.

    Each face is a grid in its own plane, rows packed near the border, and every grid point is pushed
    onto the rounded box: ``inner + radius * normalize(q - inner)`` with ``inner`` the point clipped to
    the shrunk cube. Grid points on a shared cube edge land on the same surface point from both faces,
    so the mesh is closed; normals are exact. The texture keeps the flat-cube layout, so the pips stay
    where ``_cube`` puts them and the atlas border shades the rounded rim."""
    h = 0.5 - radius
    rim = [-0.5 + radius * k / bevel_rows for k in range(bevel_rows)]
    ticks = np.array(rim + [-h, h] + [-x for x in reversed(rim)])
    v, vt, vn, faces = [], [], [], []
    m = len(ticks)
    for value, (n, u, w) in DIE_FACES.items():
        n, u, w = (np.asarray(a, float) for a in (n, u, w))
        base = len(v)
        col, row = (value - 1) % 3, (value - 1) // 3
        for sw in ticks:
            for su in ticks:
                q = 0.5 * n + su * u + sw * w
                inner = np.clip(q, -h, h)
                d = q - inner
                normal = d / np.linalg.norm(d)
                v.append(inner + radius * normal)
                vn.append(normal)
                uu, ww = su + 0.5, sw + 0.5
                vt.append(((col + 0.02 + 0.96 * uu) / 3, 1 - (row + 0.02 + 0.96 * (1 - ww)) / 2))
        for j in range(m - 1):
            for i in range(m - 1):
                a, b, c, d_ = base + j * m + i, base + j * m + i + 1, base + (j + 1) * m + i + 1, base + (j + 1) * m + i
                faces += [((a, a, a), (b, b, b), (c, c, c)), ((a, a, a), (c, c, c), (d_, d_, d_))]
    return MeshData(np.array(v), np.array(vt), np.array(vn), tuple(faces))


def _cylinder(segments: int = 24) -> MeshData:
    """Cylinder of diameter 1 and height 1 along z."""
    v, vt, vn, faces = [], [], [], []
    for i in range(segments + 1):
        a = 2 * math.pi * i / segments
        c, s = math.cos(a), math.sin(a)
        v += [(0.5 * c, 0.5 * s, -0.5), (0.5 * c, 0.5 * s, 0.5)]
        vt += [(i / segments, 0.0), (i / segments, 1.0)]
        vn.append((c, s, 0))
    for i in range(segments):
        a, b, c, d = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
        faces += [((a, a, i), (c, c, i + 1), (d, d, i + 1)), ((a, a, i), (d, d, i + 1), (b, b, i))]
    for z, ni in ((0.5, len(vn)), (-0.5, len(vn) + 1)):
        pass
    vn += [(0, 0, 1), (0, 0, -1)]
    for z, ni in ((0.5, len(vn) - 2), (-0.5, len(vn) - 1)):
        centre = len(v)
        v.append((0, 0, z))
        vt.append((0.5, 0.5))
        ring = []
        for i in range(segments):
            a = 2 * math.pi * i / segments
            ring.append(len(v))
            v.append((0.5 * math.cos(a), 0.5 * math.sin(a), z))
            vt.append((0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)))
        for i in range(segments):
            p, q = ring[i], ring[(i + 1) % segments]
            tri = ((centre, centre, ni), (p, p, ni), (q, q, ni)) if z > 0 else ((centre, centre, ni), (q, q, ni), (p, p, ni))
            faces.append(tri)
    return MeshData(np.array(v), np.array(vt), np.array(vn), tuple(faces))


def _sphere(rings: int = 12, segments: int = 24) -> MeshData:
    """UV sphere of diameter 1."""
    v, vt, vn, faces = [], [], [], []
    for r in range(rings + 1):
        th = math.pi * r / rings
        for s in range(segments + 1):
            ph = 2 * math.pi * s / segments
            n = (math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th))
            v.append(tuple(0.5 * x for x in n))
            vn.append(n)
            vt.append((s / segments, 1 - r / rings))
    w = segments + 1
    for r in range(rings):
        for s in range(segments):
            a, b, c, d = r * w + s, r * w + s + 1, (r + 1) * w + s + 1, (r + 1) * w + s
            faces += [((a, a, a), (d, d, d), (c, c, c)), ((a, a, a), (c, c, c), (b, b, b))]
    return MeshData(np.array(v), np.array(vt), np.array(vn), tuple(faces))


def _plane(n: int = 24) -> MeshData:
    """Unit square in z=0 facing +z, split in n x n quads: TinyRenderer clips large triangles that
    reach behind the camera badly (jagged holes), small ones it handles."""
    g = np.linspace(-0.5, 0.5, n + 1)
    xx, yy = np.meshgrid(g, g)
    v = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)], axis=1)
    vt = v[:, :2] + 0.5
    vn = np.array([(0, 0, 1)], float)
    faces = []
    for r in range(n):
        for c in range(n):
            a, b, d = r * (n + 1) + c, r * (n + 1) + c + 1, (r + 1) * (n + 1) + c
            e = d + 1
            faces += [((a, a, 0), (b, b, 0), (e, e, 0)), ((a, a, 0), (e, e, 0), (d, d, 0))]
    return MeshData(v, vt, vn, tuple(faces))


PROCEDURAL_MESHES = {"die": lambda: _cube(True), "die_round": _rounded_cube, "box": lambda: _cube(False), "can": _cylinder,
                     "sphere": _sphere, "plane": _plane}
PROCEDURAL_COLLISION = {"die": "box", "die_round": "box", "box": "box", "can": "cylinder", "sphere": "sphere", "plane": "box"}


def _write_cached(text: str, suffix: str, stem: str) -> Path:
    data = text.encode()
    path = cache_dir() / "meshes" / f"{stem}-{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        atomic_write_bytes(path, data)
    return path


@functools.lru_cache(maxsize=None)
def procedural_obj(name: str) -> Path:
    return _write_cached(PROCEDURAL_MESHES[name]().obj_text(), ".obj", name)


def _face_indices(line: str, seen: int, part: int = 0) -> list[int]:
    """0-based indices of an OBJ face line, "f a/b/c ...": of its vertices (``part`` 0), texture coordinates (1) or
    normals (2), 1-based in the file or negative ones counted back from the ``seen`` entries of that kind defined
    before it; -1 where a corner has none. A trailing comment is ignored. Not range-checked."""
    out = []
    for tok in line.split("#")[0].split()[1:]:
        parts = tok.split("/")
        i = int(parts[part]) if len(parts) > part and parts[part] else 0
        out.append(i - 1 if i > 0 else (seen + i if i < 0 else -1))
    return out


@functools.lru_cache(maxsize=None)
def obj_geometry(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices Nx3, triangles Tx3x3) of an OBJ; polygons are fanned into triangles."""
    pts, faces = [], []
    fix = "fix that line or export the mesh again as a Wavefront OBJ"
    with open(path, errors="replace") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("v "):
                try:
                    xyz = [float(x) for x in line.split("#")[0].split()[1:4]]
                except ValueError:
                    xyz = []
                if len(xyz) != 3 or not all(math.isfinite(x) for x in xyz):
                    raise AssetError(f"mesh `{path}` line {n}: a vertex needs three finite numbers, got `{line.strip()}`; {fix}.")
                pts.append(xyz)
            elif line.startswith("f "):
                try:
                    idx = _face_indices(line, len(pts))
                except ValueError:
                    raise AssetError(f"mesh `{path}` line {n}: a face lists vertex numbers, got `{line.strip()}`; {fix}.") from None
                if len(idx) < 3 or min(idx) < 0:
                    raise AssetError(f"mesh `{path}` line {n}: a face needs three or more vertices, each numbered from 1 "
                                     f"(or counted back with negative numbers), got `{line.strip()}`; {fix}.")
                faces += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
    if not pts:
        raise AssetError(f"mesh `{path}` has no vertices; export it again as a Wavefront OBJ with geometry.")
    v = np.asarray(pts, float)
    f_ = np.asarray(faces, int).reshape(-1, 3)
    if not len(f_):
        raise AssetError(f"mesh `{path}` has vertices but no faces (`f` lines); export it again as a Wavefront OBJ with its "
                         "surface (triangles or polygons), not as points or lines.")
    if f_.max() >= len(v):  # PyBullet would draw what such a face names, while labels could not see it
        raise AssetError(f"mesh `{path}`: a face names vertex {int(f_.max()) + 1} but the file has {len(v)} vertices; fix the "
                         "face or export the mesh again as a Wavefront OBJ.")
    return v, v[f_]


@functools.lru_cache(maxsize=None)
def obj_has_uv(path: Path) -> bool:
    with open(path, errors="replace") as f:
        return any(line.startswith("vt ") for line in f)


def _material_file(mesh: Path) -> Path | None:
    """The first material file an OBJ names (``mtllib``), when it exists beside the OBJ."""
    names = [ln.split(None, 1)[1].strip() for ln in open(mesh, errors="replace") if ln.startswith("mtllib ")]
    return mesh.parent / names[0] if names and (mesh.parent / names[0]).is_file() else None


def obj_has_own_texture(mesh: Path) -> bool:
    """The OBJ's own material file has a texture map (map_Kd)."""
    mtl = _material_file(mesh)
    return mtl is not None and any(ln.strip().startswith("map_Kd") for ln in open(mtl, errors="replace"))


def own_color(mesh: Path) -> tuple[float, float, float, float] | None:
    """The diffuse colour (``Kd``) of a user OBJ's first material, where it has one."""
    mtl = _material_file(mesh)
    for ln in open(mtl, errors="replace") if mtl is not None else ():
        parts = ln.split()
        if parts[:1] == ["Kd"] and len(parts) >= 4:
            try:
                r, g, b = (min(1.0, max(0.0, float(x))) for x in parts[1:4])
            except ValueError:
                return None
            return (r, g, b, 1.0)
    return None


def check_own_textures(mesh: Path) -> None:
    """Every texture map a user OBJ's material names exists and decodes: a missing or broken one rendered untextured
    with no word (or a bare OpenCV warning), while the dataset looked fine."""
    from PIL import Image

    mtl = _material_file(mesh)
    for name, tex in texture_maps(mesh, mtl) if mtl is not None else ():
        if not tex.is_file():
            raise AssetError(f"mesh `{mesh}`: its material {mtl.name} names texture `{name}`, which does not exist next to "
                             f"it ({tex}); put the image there, or fix the map_Kd line.")
        try:  # Pillow reads what PyBullet's loader reads (PNG, JPEG, BMP, TGA...), where OpenCV has no TGA
            with Image.open(tex) as im:
                im.load()
                fmt = im.format
        except Exception:  # UnidentifiedImageError, OSError, a decompression bomb, a format plugin that fails to load
            raise AssetError(f"mesh `{mesh}`: texture `{name}` of its material {mtl.name} cannot be read as an image; "
                             "save it again as PNG or JPEG.") from None
        if fmt not in STB_FORMATS:  # Pillow reads it, PyBullet's stb_image would not: drawn untextured there
            raise AssetError(f"mesh `{mesh}`: texture `{name}` is {fmt}, which PyBullet's renderers cannot read; save it "
                             "again as PNG or JPEG.")


STB_FORMATS = ("PNG", "JPEG", "BMP", "TGA", "GIF", "PPM")  # Pillow's names for what stb_image (PyBullet's loader) reads


def map_kd_name(mesh: Path, line: str) -> str | None:
    """The texture file a material line names, if it is a ``map_Kd`` line: relative to the OBJ's folder as PyBullet's
    loader resolves it, the rest of the line where that file exists (a name with spaces), else its last word (options
    such as ``-s 1 1 1`` come before the name)."""
    parts = line.split()
    if parts[:1] != ["map_Kd"] or len(parts) < 2:
        return None
    whole = line.strip().split(None, 1)[1].strip()
    return whole if (mesh.parent / whole).is_file() else parts[-1]


def texture_maps(mesh: Path, mtl: Path, first_only: bool = False) -> list[tuple[str, Path]]:
    """(name as written, path) of each ``map_Kd`` of an OBJ's material file (:func:`map_kd_name`). ``first_only``: the
    first material's map alone (PyBullet reads no other)."""
    out, materials = [], 0
    for ln in open(mtl, errors="replace"):
        if ln.split()[:1] == ["newmtl"]:
            materials += 1
            if first_only and materials > 1:
                break
        name = map_kd_name(mesh, ln)
        if name is not None:
            out.append((name, (mesh.parent / name).resolve()))
            if first_only:
                break
    return out


def _own_material(mesh: Path) -> str:
    """An OBJ's own first material, rewritten so its texture resolves from the cache folder."""
    mtl = _material_file(mesh)
    if mtl is None:
        return ""
    out = []
    for ln in open(mtl, errors="replace"):
        name = map_kd_name(mesh, ln)  # the file as texture_maps names it
        if name is not None:
            tex = render_texture((mesh.parent / name).resolve())
            ln = f"map_Kd {os.path.relpath(tex, cache_dir() / 'meshes')}\n"
        out.append(ln)
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _obj_lines(mesh: Path) -> tuple[tuple[str, tuple[float, float, float] | None], ...]:
    """An OBJ's lines without its material statements, each vertex line with its parsed coordinates: parsed once
    per process, since every new object scale bakes another copy (~1 ms of parsing per copy of the duck)."""
    out = []
    for ln in open(mesh, errors="replace"):
        if ln.startswith(("mtllib", "usemtl")):
            continue
        xyz = tuple(float(t) for t in ln.split()[1:4]) if ln.startswith("v ") else None
        out.append((ln, xyz))
    return tuple(out)  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def _box_uv_lines(mesh: Path) -> tuple[tuple[tuple[str, tuple[float, float, float] | None], ...], tuple[str, ...]]:
    """An OBJ without texture coordinates given some by box projection: (its lines as :func:`_obj_lines`, faces
    rewritten to use them; the ``vt`` lines). Each face takes the two axes its normal is most across, in units
    of the mesh's largest side, so a texture covers the object about once with seams only where faces turn.
    Without it a random texture could not be applied to a mesh without UVs (most CAD and STL conversions), and
    the object was only ever coloured. Once per mesh: every scale and texture of it bakes the same faces."""
    parsed = _obj_lines(mesh)
    xyz = np.array([v for _, v in parsed if v is not None], float).reshape(-1, 3)
    lo, size = (xyz.min(axis=0), float(np.ptp(xyz, axis=0).max() or 1.0)) if len(xyz) else (np.zeros(3), 1.0)
    out: list[tuple[str, tuple[float, float, float] | None]] = []
    vt: list[str] = []
    seen = 0  # vertices defined so far: a negative index counts back from here, as OBJ says
    for ln, v in parsed:
        if v is not None:
            seen += 1
        if not ln.startswith("f "):
            out.append((ln, v))
            continue
        corners = [tok.split("/") for tok in ln.split("#")[0].split()[1:]]
        try:
            idx = _face_indices(ln, seen)
        except ValueError:
            continue
        if len(idx) < 3 or min(idx) < 0 or max(idx) >= seen:
            continue  # as obj_geometry: a face naming a vertex that does not exist is left out
        p = xyz[idx]
        u, w = [k for k in range(3) if k != int(np.argmax(np.abs(np.cross(p[1] - p[0], p[2] - p[0]))))]
        toks = []
        for c, q in zip(corners, p):
            vt.append(f"vt {(q[u] - lo[u]) / size:.6g} {(q[w] - lo[w]) / size:.6g}\n")
            vn = c[2] if len(c) > 2 and c[2] else ""
            toks.append(f"{c[0]}/{len(vt)}" + (f"/{vn}" if vn else ""))
        out.append(("f " + " ".join(toks) + "\n", None))
    return tuple(out), tuple(vt)


def box_uv_needed(mesh: Path, texture: Path | None) -> bool:
    """A texture mapped onto a mesh without UVs of its own is laid on by box projection (:func:`_box_uv_lines`)."""
    return texture is not None and not obj_has_uv(mesh)


def box_uv_text(mesh: Path) -> str:
    """The OBJ text of ``mesh`` with box-projected UVs, as :func:`baked_obj` writes it before scaling."""
    parsed, vt = _box_uv_lines(mesh)
    return "".join(vt) + "".join(ln for ln, _ in parsed)


@functools.lru_cache(maxsize=None)
def baked_obj(mesh: Path, texture: Path | None, scale: tuple[float, float, float],
              offset: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Path:
    """A copy of ``mesh`` moved by ``-offset`` (:attr:`Asset.offset`) with ``scale`` baked into its vertices and, if
    given, ``texture`` as its only material (PyBullet reads the first map_Kd). Baking matters: under EGL two visual
    shapes made from the same file with different meshScale are drawn at the first one's scale."""
    (sx, sy, sz), (ox, oy, oz) = scale, offset
    parsed, vt = _box_uv_lines(mesh) if box_uv_needed(mesh, texture) else (_obj_lines(mesh), ())
    lines = [*vt, *(ln if xyz is None else f"v {(xyz[0] - ox) * sx:.7g} {(xyz[1] - oy) * sy:.7g} {(xyz[2] - oz) * sz:.7g}\n"
                    for ln, xyz in parsed)]
    stem = hashlib.sha1((f"{mesh}|{texture}|{scale}" + (f"|{offset}" if any(offset) else "")).encode()).hexdigest()[:16]
    if texture is not None:
        # PyBullet joins map_Kd to the .mtl's folder: give it a path relative to the cache's meshes/ folder.
        rel = os.path.relpath(render_texture(texture), cache_dir() / "meshes")
        material = f"newmtl m\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nmap_Kd {rel}\n"
    else:
        material = _own_material(mesh)
    header = ""
    if material:
        mtl = _write_cached(material, ".mtl", f"mat-{stem}")
        first = next((ln.split()[1] for ln in material.splitlines() if ln.startswith("newmtl")), "m")
        header = f"mtllib {mtl.name}\nusemtl {first}\n"
    out = _write_cached(header + "".join(lines), ".obj", f"mesh-{stem}")
    return out


@functools.lru_cache(maxsize=None)
def scaled_urdf(path: Path, scale: float, visual_only: bool = False) -> Path:
    """A copy of the URDF at ``path`` with ``scale`` written into it (OBJ meshes baked by
    :func:`baked_obj`, primitive sizes and origins multiplied) instead of passed as ``globalScaling``.

    Under EGL the plugin caches a URDF's meshes by file name, so a second body of the same URDF at
    another ``globalScaling`` was drawn at the first one's size (masks ~25% off). A copy per scale,
    whose meshes are files of their own, is drawn right by both renderers. ``visual_only``: without its
    ``<collision>`` elements, for a client that only draws (no collision mesh baked, no hull computed)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise AssetError(f"URDF `{path}` is not valid XML ({e}); fix the file or use an OBJ mesh.") from None
    if visual_only:
        for link in root.iter("link"):
            for col in link.findall("collision"):
                link.remove(col)

    def scaled(text: str, k: float) -> str:
        return " ".join(f"{float(x) * k:.9g}" for x in text.split())

    for origin in root.iter("origin"):  # visual, collision, inertial and joint frames
        if origin.get("xyz"):
            origin.set("xyz", scaled(origin.get("xyz"), scale))
    for m in root.iter("mesh"):
        # the file PyBullet would read for the URDF where it is (a package:// name found above it), not found from the copy
        mesh = urdf_mesh_path(Path(path).resolve(), m.get("filename", "")) or (path.parent / m.get("filename", "")).resolve()
        own = np.array([float(x) for x in m.get("scale", "1 1 1").split()]) * scale
        if mesh.suffix.lower() == ".obj" and mesh.is_file():
            m.set("filename", str(baked_obj(mesh, None, tuple(float(x) for x in own))))
            m.attrib.pop("scale", None)
        else:  # STL/DAE: PyBullet scales these itself; absolute path so the copy finds them
            m.set("filename", str(mesh))
            m.set("scale", " ".join(f"{x:.9g}" for x in own))
    for tex in root.iter("texture"):
        if tex.get("filename"):
            tex.set("filename", str(render_texture((path.parent / tex.get("filename")).resolve())))
    for box in root.iter("box"):
        box.set("size", scaled(box.get("size", "1 1 1"), scale))
    for tag in ("sphere", "cylinder", "capsule"):
        for g in root.iter(tag):
            for attr in ("radius", "length"):
                if g.get(attr):
                    g.set(attr, f"{float(g.get(attr)) * scale:.9g}")
    text = ET.tostring(root, encoding="unicode")
    return _write_cached(text, ".urdf", f"{path.stem}-x{scale:.4g}{'-visual' if visual_only else ''}")


def _rpy_matrix(r: float, p: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _origin(el) -> np.ndarray:
    """The 4x4 transform of an element's ``<origin xyz rpy>`` (identity without one)."""
    origin = el.find("origin") if el is not None else None
    xyz = [float(x) for x in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]
    rpy = [float(x) for x in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rpy_matrix(*rpy), xyz
    return T


def _link_visuals(link, path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(points, triangles) of each readable ``<visual>`` of a link, in the link's frame, at their URDF size."""
    out = []
    for vis in link.findall("visual"):
        geom = vis.find("geometry")
        local = None
        if geom is not None and geom.find("mesh") is not None:
            m = geom.find("mesh")
            obj = readable_obj(urdf_mesh_path(path, m.get("filename", "")))
            if obj is not None:
                scale = np.array([float(x) for x in m.get("scale", "1 1 1").split()])
                v, t = obj_geometry(obj)
                local = (v * scale, t * scale)
        elif geom is not None and geom.find("box") is not None:
            size = np.array([float(x) for x in geom.find("box").get("size").split()])
            _, t = obj_geometry(procedural_obj("box"))  # unit cube about the origin
            local = ((np.array(np.meshgrid([-.5, .5], [-.5, .5], [-.5, .5])).reshape(3, -1).T) * size, t * size)
        elif geom is not None and geom.find("sphere") is not None:
            v, t = obj_geometry(procedural_obj("sphere"))
            d = 2 * float(geom.find("sphere").get("radius"))
            local = (v * d, t * d)
        elif geom is not None and geom.find("cylinder") is not None:
            c = geom.find("cylinder")
            k = np.array([2 * float(c.get("radius"))] * 2 + [float(c.get("length"))])
            v, t = obj_geometry(procedural_obj("can"))
            local = (v * k, t * k)
        if local is not None:
            T = _origin(vis)
            out.append((local[0] @ T[:3, :3].T + T[:3, 3], local[1] @ T[:3, :3].T + T[:3, 3]))
    return out


def _urdf_mesh_files(path: Path) -> list[str]:
    """The mesh filenames a URDF's visuals and collisions name, as written."""
    names = [m.get("filename", "") for m in _urdf_root(path).iter("mesh")]
    return list(dict.fromkeys(n for n in names if n))


def _drop_uri(name: str) -> str:
    for prefix in ("package://", "model://"):  # what PyBullet drops (ROS packages, Gazebo models)
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def urdf_mesh_path(urdf: Path, name: str) -> Path | None:
    """The file PyBullet's URDF loader reads for a ``<mesh filename>`` of ``urdf`` (the path simgen gives loadURDF), found
    as bullet3's UrdfFindMeshFile finds it: a package:// or model:// prefix dropped, then the name as it is (from the
    working folder), then under every folder above the URDF, its own first, then under ., .. and ../.. So a ROS
    robot's ``package://arm/meshes/base.stl`` is found in ``.../arm/meshes/`` beside ``.../arm/urdf/arm.urdf``, and
    labels read the file PyBullet draws. None where it finds none."""
    name = _drop_uri(name)
    if not name:
        return None
    text = str(urdf)
    above = [text[:i] for i, ch in enumerate(text) if ch in "/\\"]  # every folder above it, "" (the root) included
    for attempt in (name, *(f"{d}/{name}" for d in reversed(above)), *(f"{d}/{name}" for d in (".", "..", "../.."))):
        q = Path(attempt)
        if q.is_file():
            return q.resolve()
    return None


def readable_obj(mesh: Path | None) -> Path | None:
    """An OBJ of a URDF's mesh file for labels and the GL renderer: the file itself, or an OBJ converted from an STL or
    a Collada .dae (what ROS robots' URDFs name), or None where there is none (missing, unreadable)."""
    if mesh is None:
        return None
    suffix = mesh.suffix.lower()
    if not mesh.is_file() or suffix not in (".obj", *URDF_CONVERTED):
        return None
    if suffix == ".obj":
        return mesh
    try:
        return converted_obj(mesh)
    except AssetError:  # PyBullet may still draw it; the run warns that labels leave it out (unread_visuals)
        return None


URDF_CONVERTED = (".stl", ".dae")  # PyBullet's URDF loader reads .obj, .stl and .dae meshes; simgen converts the other two
URDF_MESHES = (".obj", *URDF_CONVERTED, ".cdf")  # what PyBullet's URDF loader accepts (.cdf: a convex decomposition)


def unread_visuals(path: Path) -> list[str]:
    """``link: file`` of each visual mesh of a URDF that its label geometry leaves out: one simgen cannot read (a
    damaged file) or that is not there. The render draws what it can; the amodal box and visible fraction then miss
    that part, so the run warns."""
    out = []
    for link in _urdf_root(path).findall("link"):
        for vis in link.findall("visual"):
            m = vis.find("geometry/mesh")
            if m is not None and readable_obj(urdf_mesh_path(path, m.get("filename", ""))) is None:
                out.append(f"{link.get('name')}: {m.get('filename', '')}")
    return out


@functools.lru_cache(maxsize=None)
def _urdf_root(path: Path):
    """The parsed URDF (read only: shared by :func:`urdf_links` and :func:`urdf_geometry`)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise AssetError(f"URDF `{path}` is not valid XML ({e}); fix the file or use an OBJ mesh.") from None
    return root


def urdf_links(path: Path) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Every link of a URDF with its pose in the base link's frame at the joints' zero positions (the tree walked from
    the root link through each joint's ``<origin>``), and the names of the links that hang off a movable joint."""
    root = _urdf_root(path)
    links = [ln.get("name") for ln in root.findall("link")]
    joints = root.findall("joint")
    children = {j.find("child").get("link"): j for j in joints if j.find("child") is not None and j.find("parent") is not None}
    base = next((n for n in links if n not in children), links[0] if links else None)
    poses, moving, todo = {base: np.eye(4)}, [], [base]
    while todo:  # breadth-first from the base: a joint's child sits at its parent's pose times the joint's origin
        parent = todo.pop(0)
        for child, j in children.items():
            if j.find("parent").get("link") == parent and child not in poses:
                poses[child] = poses[parent] @ _origin(j)
                if j.get("type", "fixed") != "fixed" or parent in moving:
                    moving.append(child)
                todo.append(child)
    return [(n, poses[n]) for n in links if n in poses], moving


@functools.lru_cache(maxsize=None)
def urdf_geometry(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Visual geometry of the whole URDF in its base link's frame: (points Nx3, triangles Tx3x3), for extents, hulls,
    silhouettes and amodal boxes. Every link counts, placed through its joints' origins: exact for links on fixed
    joints; a link on a movable joint is taken at the joint's zero position (:func:`urdf_links` names them, and the
    render warns). Before, only the base link counted, so a two-link model's amodal box was its base's alone."""
    root = _urdf_root(path)
    by_name = {ln.get("name"): ln for ln in root.findall("link")}
    pts, tris = [], []
    for name, T in urdf_links(path)[0]:
        for p_, t_ in _link_visuals(by_name[name], path):
            pts.append(p_ @ T[:3, :3].T + T[:3, 3])
            tris.append(t_ @ T[:3, :3].T + T[:3, 3])
    if not pts:
        # No readable visual mesh: a 10 cm cube stands in for extents; say so via a clear error
        # only if the URDF cannot load at all (PyBullet decides that later).
        return np.array(np.meshgrid([-.05, .05], [-.05, .05], [-.05, .05])).reshape(3, -1).T, np.zeros((0, 3, 3))
    return np.concatenate(pts), np.concatenate(tris)


CONVEX_FACES_CHECKED = 4096  # faces the convexity test checks on a dense mesh
HULL_POINTS_FROM = 5000  # points above which the hull's vertices stand in for them (the largest built-in has 4,526)


PYBULLET_MAX_VERTICES = 131072  # createCollisionShape(vertices=...) refuses more (PyBullet 3.2.7)
OUTLINE_ALL_UP_TO = 64  # points up to which a mesh's outline is projected from all of them (a box has 24)


def _cached_hull_indices(points: np.ndarray) -> np.ndarray:
    """Indices of the points that are vertices of their convex hull (:func:`_hull_vertices`), kept in the cache folder
    per point set: Qhull (scipy) is imported and run once per mesh and machine, not in every run."""
    import io

    points = np.ascontiguousarray(points, np.float64)
    try:
        path: Path | None = cache_dir() / "hulls" / f"{hashlib.sha1(points.tobytes()).hexdigest()[:20]}-{len(points)}.npy"
    except OSError:  # no cache folder to be had (a read-only home): found in every run
        path = None
    if path is not None:
        try:
            idx = np.load(path)
            if idx.ndim == 1 and idx.dtype.kind == "i" and len(idx) and idx.min() >= 0 and idx.max() < len(points):
                return idx
        except Exception:  # a missing, empty or cut-short file (OSError, EOFError, ValueError): found again, rewritten
            pass
    idx = _hull_indices(points)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, idx)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        except OSError:  # a read-only cache: found again next time
            pass
    return idx


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """The points that are vertices of their convex hull (Qhull, once per point set and machine:
    :func:`_cached_hull_indices`); all of them when they span no volume (a flat mesh), which Qhull refuses."""
    return points[_cached_hull_indices(points)]


def _hull_indices(points: np.ndarray) -> np.ndarray:
    """Sorted indices of :func:`_hull_vertices` into ``points``."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        return np.sort(ConvexHull(points).vertices).astype(np.int64)
    except (QhullError, ValueError):
        return np.arange(len(points), dtype=np.int64)


@functools.lru_cache(maxsize=None)
def pybullet_parts(path: Path) -> int:
    """How many convex hulls PyBullet builds for the OBJ at ``path`` (one per object or group it finds): its call, so
    a scratch client loads the file once per process to see."""
    import pybullet as p

    c = p.connect(p.DIRECT)
    try:
        shape = p.createCollisionShape(p.GEOM_MESH, fileName=str(path), physicsClientId=c)
        if shape < 0:
            raise AssetError(f"PyBullet cannot load mesh `{path}`; check that it is a valid OBJ file.")
        return len(p.getCollisionShapeData(p.createMultiBody(0, shape, physicsClientId=c), -1, physicsClientId=c))
    except p.error:
        raise AssetError(f"PyBullet cannot load mesh `{path}`; check that it is a valid OBJ file.") from None
    finally:
        p.disconnect(c)


def is_convex(triangles: np.ndarray, points: np.ndarray, tol: float = 5e-3) -> bool:
    """True when every vertex lies on one side of every face's plane (within ``tol`` of the object's
    size; tessellated rounded shapes pass): then the projected convex hull is the silhouette. Face
    winding need not be consistent."""
    if len(triangles) == 0:
        return True
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    keep = norm > 1e-12
    n, a = n[keep] / norm[keep, None], a[keep]
    eps = tol * float(np.ptp(points, axis=0).max() or 1.0)
    for k in range(0, len(n), 256):  # chunks keep the faces x vertices matrix small
        d = np.einsum("fk,fvk->fv", n[k:k + 256], points[None, :, :] - a[k:k + 256, None, :])
        if np.any((d.max(axis=1) > eps) & (d.min(axis=1) < -eps)):
            return False
    return True


# Mesh formats read through trimesh and converted once to an OBJ in the cache (with its material and texture): what CAD
# (STL), scanners (PLY, often vertex-coloured) and model stores (glTF/GLB) export. Everything below reads OBJ.
CONVERTED_FORMATS = (".stl", ".ply", ".glb", ".gltf", ".dae", ".off")
CONVERTER_VERSION = "2"  # bump when converted_obj writes other files for the same input (2: glTF parts packed right)
Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)  # glTF's +Y up onto simgen's +Z


def gltf_files(src: Path) -> list[Path]:
    """The files a .gltf names (its buffers and images, by relative URI; embedded data URIs are not files); none for
    any other format. They are part of the mesh: its cache key and its provenance hash cover them."""
    if src.suffix.lower() != ".gltf":
        return []
    import json
    from urllib.parse import unquote

    try:
        doc = json.loads(src.read_text())
        uris = [x.get("uri") for group in ("buffers", "images") for x in doc.get(group, []) if isinstance(x, dict)]
    except (OSError, ValueError, AttributeError):  # trimesh says what is wrong with it, where it is read
        return []
    return [src.parent / unquote(u) for u in uris if isinstance(u, str) and u and not u.startswith("data:")]


def converted_obj(src: Path) -> Path:
    """An OBJ (with its .mtl and texture image) made from a mesh file in another format, once per file content and
    machine, in the cache folder. Scenes and parts are merged into one mesh with their transforms applied; glTF, whose
    up axis is +Y by its specification, is turned to simgen's +Z up. Colours: a texture is kept as the mesh's own
    texture; one colour for every vertex or face becomes its material colour (Kd); varying vertex or face colours (a
    scan's) are baked into a texture. Units are the file's, as with an OBJ (``scale`` turns millimetres into metres)."""
    src = Path(src)
    try:
        stamp = tuple((q.stat().st_size, q.stat().st_mtime_ns) for q in (src, *gltf_files(src)) if q.exists())
    except OSError as e:
        raise AssetError(f"mesh `{src}` cannot be read ({e.strerror}); check its permissions.") from None
    return _converted_obj(src, stamp)


@functools.lru_cache(maxsize=256)
def _converted_obj(src: Path, stamp: tuple) -> Path:
    """:func:`converted_obj` for one version of the file (``stamp``: sizes and modification times): a URDF's STL links
    are looked up for every new pooled body, and hashing a robot's megabytes of STL each time would add up."""
    import shutil
    from importlib.metadata import version

    how = "export it again, or convert it to .obj (e.g. in Blender: File > Export > Wavefront)"
    what = src.suffix.lower()[1:].upper()
    try:
        data = src.read_bytes() + b"".join(q.read_bytes() for q in gltf_files(src) if q.is_file())  # a .gltf's buffers and images
    except OSError as e:
        raise AssetError(f"mesh `{src}` cannot be read ({e.strerror}); check its permissions.") from None
    key = hashlib.sha1(data + f"{CONVERTER_VERSION}/{version('trimesh')}".encode()).hexdigest()[:16]
    folder = cache_dir() / "meshes" / f"{src.stem}-{key}"
    obj = folder / f"{src.stem}.obj"
    if obj.is_file():
        return obj
    import trimesh

    try:
        mesh = _one_mesh(trimesh.load(str(src)))
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise AssetError(f"mesh `{src}` holds no triangles (a point cloud or an empty scene?); {how}.")
        if src.suffix.lower() in (".glb", ".gltf"):
            mesh.apply_transform(Y_UP_TO_Z_UP)
        if src.suffix.lower() == ".dae":  # as PyBullet's Collada loader reads it: <unit meter> applied, <up_axis> not
            mesh.apply_scale(_collada_unit(src))
        kd = None
        if mesh.visual.kind in ("vertex", "face"):
            colours = mesh.visual.vertex_colors if mesh.visual.kind == "vertex" else mesh.visual.face_colors
            if len(np.unique(colours[:, :3], axis=0)) == 1:
                kd = colours[0, :3] / 255.0
                mesh.visual = trimesh.visual.ColorVisuals(mesh)  # no colours in the OBJ's vertex lines: the material has it
            else:
                mesh.visual = mesh.visual.to_texture()
        text, files = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_texture=True, return_texture=True,
                                                      mtl_name=f"{src.stem}.mtl")
    except AssetError:
        raise
    except Exception as e:  # trimesh raises many kinds (ValueError, KeyError, NotImplementedError for Draco...)
        raise AssetError(f"mesh `{src}` cannot be read as {what} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'}); {how}.") from None
    if kd is not None:
        text = f"mtllib {src.stem}.mtl\nusemtl colour\n" + text
        files = {f"{src.stem}.mtl": f"newmtl colour\nKd {kd[0]:.6f} {kd[1]:.6f} {kd[2]:.6f}\n".encode()}
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / obj.name).write_text(text)
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        if folder.is_dir() and not obj.is_file():  # left incomplete (a cache cleaned by hand): replaced
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)  # whole or not at all; another process may have made it first
        except OSError:
            if not obj.is_file():
                raise
    except OSError as e:
        raise AssetError(f"cannot write the OBJ converted from `{src}` into simgen's cache {folder.parent} ({e.strerror}); "
                         "free disk space there or set SIMGEN_CACHE to a writable folder.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return obj


def _one_mesh(loaded):
    """A trimesh Scene's parts placed by its graph and merged into one mesh (a mesh or point cloud as it is). PBR materials
    (glTF's) become simple ones before the merge: trimesh's texture packing of PBR parts garbled their colours (a red
    and a blue part came out cyan and yellow), where simple materials pack into one atlas as they were."""
    import trimesh

    if not isinstance(loaded, trimesh.Scene):
        parts = [loaded]
    else:
        parts = []
        for node in loaded.graph.nodes_geometry:
            transform, name = loaded.graph[node]
            g = loaded.geometry[name]
            if isinstance(g, trimesh.Trimesh):
                g = g.copy()
                g.apply_transform(transform)
                parts.append(g)
    for g in parts:
        material = getattr(g.visual, "material", None)
        if g.visual.kind == "texture" and hasattr(material, "to_simple"):
            g.visual.material = material.to_simple()
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts)


def _collada_unit(src: Path) -> float:
    """The metres per unit a Collada file declares (``<asset><unit meter="0.001"/>``), 1 where it declares none."""
    try:
        for _, el in ET.iterparse(src, events=("start",)):
            if el.tag.rsplit("}", 1)[-1] == "unit" and el.get("meter"):
                unit = float(el.get("meter"))
                return unit if math.isfinite(unit) and unit > 0 else 1.0
            if el.tag.rsplit("}", 1)[-1] in ("library_geometries", "library_visual_scenes"):
                break  # past <asset>
    except (ET.ParseError, OSError, ValueError):
        pass  # trimesh has said what is wrong with it by now, or it has no unit
    return 1.0


def _obj_asset(key: str, path: Path, source: Path | None = None) -> Asset:
    v, tris = obj_geometry(path)
    check_own_textures(path)
    c = (v.min(axis=0) + v.max(axis=0)) / 2
    # texturable with or without its own UVs: baked_obj projects some onto a mesh that has none
    return Asset(key, "mesh", path, "mesh", v - c, tris - c, True, offset=tuple(float(x) for x in c),
                 own_texture=obj_has_own_texture(path), own_color=own_color(path), source=source)


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> Asset:
    """Turn an asset name or file path into an :class:`Asset`, with a did-you-mean on typos."""
    if name in PROCEDURAL_MESHES:
        path = procedural_obj(name)
        return Asset(name, "mesh", path, PROCEDURAL_COLLISION[name], *obj_geometry(path), True)
    if name in PYBULLET_MODELS:
        import pybullet_data

        path = Path(pybullet_data.getDataPath()) / PYBULLET_MODELS[name]
        return Asset(name, "urdf", path, "urdf", *urdf_geometry(path), False)
    path = Path(name).expanduser()
    if path.suffix.lower() in (".obj", ".urdf", *CONVERTED_FORMATS):
        if not path.is_file():
            raise AssetError(f"mesh `{name}` does not exist; give an existing mesh ({MESH_SUFFIXES}) or .urdf path (absolute, or "
                             "relative to where you run simgen).")
        path = path.resolve()
        if path.suffix.lower() in CONVERTED_FORMATS:
            return _obj_asset(str(path), converted_obj(path), source=path)
        if path.suffix.lower() == ".obj":
            return _obj_asset(str(path), path)
        other = [f for f in _urdf_mesh_files(path) if Path(f).suffix.lower() not in URDF_MESHES]
        if other:  # PyBullet refuses the whole URDF ("invalid mesh filename extension"), named nowhere in our error
            raise AssetError(f"URDF `{path}` names mesh `{other[0]}`, and PyBullet's URDF loader reads only .obj, .stl and .dae "
                             f"meshes (and .cdf); convert it to .obj or .stl and point the URDF at that file.")
        missing = [f for f in _urdf_mesh_files(path) if urdf_mesh_path(path, f) is None]
        if missing:  # PyBullet's own error names the URDF only ("cannot load"), and only once physics loads it
            raise AssetError(f"URDF `{path}` names mesh `{missing[0]}`, which does not exist (looked for "
                             f"{(path.parent / _drop_uri(missing[0])).resolve()} and in the folders above it, as PyBullet does); "
                             "mesh paths are relative to the URDF's folder: fix the filename or put the file there.")
        return Asset(str(path), "urdf", path, "urdf", *urdf_geometry(path), False)
    if path.suffix:
        raise AssetError(f"asset `{name}` has an unsupported file type `{path.suffix}`; simgen reads {MESH_SUFFIXES} meshes and "
                         ".urdf: convert it to one of them (e.g. in Blender: File > Export > Wavefront (.obj)).")
    raise AssetError(f"unknown asset `{name}`." + did_you_mean(name, [*PROCEDURAL_MESHES, *PYBULLET_MODELS]) +
                     f" Or give a path to a mesh ({MESH_SUFFIXES}) or .urdf file.")


MESH_SUFFIXES = ", ".join((".obj", *CONVERTED_FORMATS))
ASSET_FILE_SUFFIXES = (".obj", ".urdf", *CONVERTED_FORMATS)  # the files an `asset` folder or glob pattern picks up
