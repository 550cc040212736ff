"""Plain, validated config objects. Hydra composes a dict at the CLI; :func:`render_config` turns it
into these frozen dataclasses (with one-line errors) and nothing below the CLI sees Hydra."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dists import Dist, dist
from .errors import ConfigError

MAX_SIZE = 4096
EGL_MAX = (1024, 768)  # PyBullet's EGL offscreen buffer; larger requests are stretched


@dataclass(frozen=True)
class ObjectGroup:
    asset: str
    category: str | None  # None: distractor
    count: Dist
    scale: Dist
    texture: str | None  # texture bank name ("bank", or a scene bank such as "dice"), None: own look
    mass: float = 0.1
    scale_bins: int = 8  # scales are snapped to this many levels so render-side meshes are reused


@dataclass(frozen=True)
class TraySpec:
    half_extents: Dist  # inner half size, metres
    wall_height: Dist
    wall_thickness: float = 0.01
    probability: float = 1.0


@dataclass(frozen=True)
class CameraSpec:
    distance: Dist
    tilt_deg: Dist  # angle between optical axis and straight down
    azimuth_deg: Dist
    roll_deg: Dist
    target_jitter: Dist  # metres, applied to x and y of the look-at point
    fov_deg: Dist  # vertical field of view
    K: tuple[float, float, float, float] | None = None  # fixed fx, fy, cx, cy overrides fov
    near: float = 0.05
    far: float = 5.0


@dataclass(frozen=True)
class SceneSpec:
    name: str
    objects: tuple[ObjectGroup, ...]
    distractors: tuple[ObjectGroup, ...]
    area: tuple[float, float]  # half extents of the drop region (m)
    drop_height: Dist
    camera: CameraSpec
    tray: TraySpec | None = None
    labeler: str = "category"
    max_objects: int = 40
    categories: tuple[str, ...] = ()
    throw_speed: Dist = field(default_factory=lambda: dist(0.0))
    spin: Dist = field(default_factory=lambda: dist(0.0))
    ground_rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)
    texture_banks: tuple[tuple[str, str], ...] = ()  # (bank name, "module:function") from scenes/
    ground_size: float = 2.0  # edge of the square ground plane (m); beyond it is background


@dataclass(frozen=True)
class LightSpec:
    elevation_deg: Dist
    azimuth_deg: Dist
    color_jitter: float
    ambient: Dist
    diffuse: Dist
    specular: Dist
    shadow_probability: float


@dataclass(frozen=True)
class SensorSpec:
    enabled: bool
    noise_std: Dist
    blur_probability: float
    blur_sigma: Dist
    brightness: Dist
    contrast: Dist
    saturation: Dist
    jpeg_quality: Dist


@dataclass(frozen=True)
class RandomizationSpec:
    colors: bool
    color_value: Dist  # HSV value (brightness) range of random object tints
    color_saturation: Dist
    textures: bool
    texture_kinds: tuple[str, ...]
    textures_per_kind: int
    texture_dir: str | None
    texture_probability: float
    bank_seed: int
    ground: bool
    ground_value: Dist
    ground_texture_probability: float
    light: LightSpec | None
    sensor: SensorSpec
    distractors: bool


@dataclass(frozen=True)
class PhysicsSpec:
    timestep: float = 1 / 240
    max_steps: int = 2400
    linear_threshold: float = 0.01  # m/s
    angular_threshold: float = 0.2  # rad/s
    check_every: int = 8
    quiet_checks: int = 3
    solver_iterations: int = 20  # Bullet's default 50 costs 2x per step; resting dice do not need it
    placement_retries: int = 5


@dataclass(frozen=True)
class LabelSpec:
    min_visible_fraction: float = 0.1
    min_area_px: int = 16
    depth: str | None = None  # None | "png16" | "npy"
    semantic: bool = False


@dataclass(frozen=True)
class RenderConfig:
    scene: SceneSpec
    randomization: RandomizationSpec
    physics: PhysicsSpec
    labels: LabelSpec
    renderer: str = "tiny"
    n_images: int = 100
    seed: int = 0
    out: Path = Path("datasets/dice")
    width: int = 640
    height: int = 640
    image_format: str = "jpg"
    writer: str = "coco"
    workers: int = 1
    shard_index: int = 0
    shard_count: int = 1
    views_per_scene: int = 1
    overwrite: bool = False
    progress: bool = True
    egl_devices: tuple[int, ...] | None = None
    resolved: dict = field(default_factory=dict, compare=False)  # the composed config, for the manifest


def _req(d: dict, key: str, where: str) -> Any:
    if key not in d or d[key] is None:
        raise ConfigError(f"{where}.{key} is missing; set it in the config or with `{where}.{key}=...`.")
    return d[key]


def _group(d: dict, where: str, distractor: bool) -> ObjectGroup:
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping like {{asset: die, category: die, count: [1, 5]}}, got {d!r}.")
    unknown = set(d) - {"asset", "category", "count", "scale", "texture", "mass", "scale_bins"}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: asset, category, count, scale, texture, mass, scale_bins.")
    category = None if distractor else str(d.get("category") or _req(d, "asset", where))
    count = dist(d.get("count", 1), integer=True, name=f"{where}.count")
    if getattr(count, "min", 0) < 0:
        raise ConfigError(f"{where}.count cannot be negative.")
    scale = dist(d.get("scale", 1.0), name=f"{where}.scale")
    if getattr(scale, "min", 1) <= 0:
        raise ConfigError(f"{where}.scale must be positive, got {d.get('scale')}.")
    return ObjectGroup(asset=str(_req(d, "asset", where)), category=category, count=count, scale=scale,
                       texture=d.get("texture"), mass=float(d.get("mass", 0.1)), scale_bins=int(d.get("scale_bins", 8)))


def _groups(v: Any, where: str, distractor: bool) -> tuple[ObjectGroup, ...]:
    if v is None:
        return ()
    items = v.items() if isinstance(v, dict) else enumerate(v)
    out = []
    for k, g in items:
        if isinstance(v, dict) and isinstance(g, dict) and not distractor and "category" not in g:
            g = {**g, "category": k}  # mapping form: the key names the category
        out.append(_group(g, f"{where}.{k}", distractor))
    return tuple(out)


def scene_spec(d: dict) -> SceneSpec:
    where = "scene"
    cam = _req(d, "camera", where)
    K = cam.get("K")
    if K is not None and len(K) != 4:
        raise ConfigError("scene.camera.K must be [fx, fy, cx, cy].")
    camera = CameraSpec(
        distance=dist(_req(cam, "distance", "scene.camera")), tilt_deg=dist(cam.get("tilt_deg", 0.0)),
        azimuth_deg=dist(cam.get("azimuth_deg", [0, 360])), roll_deg=dist(cam.get("roll_deg", 0.0)),
        target_jitter=dist(cam.get("target_jitter", 0.0)), fov_deg=dist(cam.get("fov_deg", 60.0)),
        K=None if K is None else tuple(float(x) for x in K), near=float(cam.get("near", 0.05)), far=float(cam.get("far", 5.0)))
    if camera.near <= 0 or camera.far <= camera.near:
        raise ConfigError(f"scene.camera needs 0 < near < far, got near={camera.near}, far={camera.far}.")
    objects = _groups(d.get("objects"), "scene.objects", False)
    if not objects:
        raise ConfigError("scene.objects is empty: a scene needs at least one labelled object group.")
    tray = d.get("tray")
    tray_spec = None if not tray else TraySpec(dist(_req(tray, "half_extents", "scene.tray")), dist(tray.get("wall_height", 0.03)),
                                               float(tray.get("wall_thickness", 0.01)), float(tray.get("probability", 1.0)))
    area = tuple(float(x) for x in _req(d, "area", where))
    if len(area) != 2 or min(area) <= 0:
        raise ConfigError("scene.area must be two positive half extents in metres, e.g. [0.1, 0.1].")
    categories = tuple(d.get("categories") or dict.fromkeys(g.category for g in objects))
    return SceneSpec(name=str(_req(d, "name", where)), objects=objects,
                     distractors=_groups(d.get("distractors"), "scene.distractors", True), area=area,  # type: ignore[arg-type]
                     drop_height=dist(d.get("drop_height", [0.05, 0.15])), camera=camera, tray=tray_spec,
                     labeler=str(d.get("labeler", "category")), max_objects=int(d.get("max_objects", 40)),
                     categories=categories, throw_speed=dist(d.get("throw_speed", 0.0)), spin=dist(d.get("spin", 0.0)),
                     ground_rgba=tuple(float(x) for x in d.get("ground_rgba", (0.8, 0.8, 0.8, 1.0))),  # type: ignore[arg-type]
                     ground_size=float(d.get("ground_size", 2.0)),
                     texture_banks=tuple((str(k), str(v)) for k, v in (d.get("texture_banks") or {}).items()))


def randomization_spec(d: dict) -> RandomizationSpec:
    lt = d.get("light") or {}
    light = None if not lt.get("enabled", True) else LightSpec(
        elevation_deg=dist(lt.get("elevation_deg", [35, 90])), azimuth_deg=dist(lt.get("azimuth_deg", [0, 360])),
        color_jitter=float(lt.get("color_jitter", 0.15)), ambient=dist(lt.get("ambient", [0.5, 0.8])),
        diffuse=dist(lt.get("diffuse", [0.3, 0.6])), specular=dist(lt.get("specular", [0.0, 0.3])),
        shadow_probability=float(lt.get("shadow_probability", 0.5)))
    s = d.get("sensor") or {}
    sensor = SensorSpec(enabled=bool(s.get("enabled", True)), noise_std=dist(s.get("noise_std", [0, 4])),
                        blur_probability=float(s.get("blur_probability", 0.3)), blur_sigma=dist(s.get("blur_sigma", [0.3, 1.2])),
                        brightness=dist(s.get("brightness", [0.85, 1.15])), contrast=dist(s.get("contrast", [0.85, 1.15])),
                        saturation=dist(s.get("saturation", [0.8, 1.2])), jpeg_quality=dist(s.get("jpeg_quality", [70, 95]), integer=True))
    kinds = tuple(d.get("texture_kinds") or ("solid", "noise", "checker", "stripes"))
    return RandomizationSpec(
        colors=bool(d.get("colors", True)), color_value=dist(d.get("color_value", [0.2, 1.0])),
        color_saturation=dist(d.get("color_saturation", [0.0, 1.0])), textures=bool(d.get("textures", True)),
        texture_kinds=kinds, textures_per_kind=int(d.get("textures_per_kind", 6)), texture_dir=d.get("texture_dir"),
        texture_probability=float(d.get("texture_probability", 0.5)), bank_seed=int(d.get("bank_seed", 0)),
        ground=bool(d.get("ground", True)), ground_value=dist(d.get("ground_value", [0.4, 1.0])),
        ground_texture_probability=float(d.get("ground_texture_probability", 0.5)),
        light=light, sensor=sensor, distractors=bool(d.get("distractors", True)))


def render_config(d: dict) -> RenderConfig:
    """Validate the composed config dict and build the plain config objects."""
    n = d.get("n_images")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"n_images must be a positive integer, got {n!r}; e.g. n_images=100.")
    w, h = d.get("width"), d.get("height")
    for name, v in (("width", w), ("height", h)):
        if not isinstance(v, int) or not 16 <= v <= MAX_SIZE:
            raise ConfigError(f"{name} must be an integer from 16 to {MAX_SIZE} pixels, got {v!r}.")
    renderer = (d.get("renderer") or {}).get("name") if isinstance(d.get("renderer"), dict) else d.get("renderer")
    if renderer not in ("tiny", "egl"):
        raise ConfigError(f"renderer must be `tiny` or `egl`, got {renderer!r}.")
    if renderer == "egl" and (w > EGL_MAX[0] or h > EGL_MAX[1]):
        raise ConfigError(f"renderer=egl renders at most {EGL_MAX[0]}x{EGL_MAX[1]} (PyBullet's fixed EGL buffer) and would stretch "
                          f"{w}x{h} silently; lower width/height or use renderer=tiny.")
    fmt = str(d.get("image_format", "jpg")).lower()
    if fmt not in ("jpg", "png"):
        raise ConfigError(f"image_format must be jpg or png, got {fmt!r}.")
    shard = d.get("shard") or {}
    si, sc = int(shard.get("index", 0)), int(shard.get("count", 1))
    if sc < 1 or not 0 <= si < sc:
        raise ConfigError(f"shard.index must be in [0, shard.count), got index={si}, count={sc}.")
    workers = d.get("workers")
    workers = len(os.sched_getaffinity(0)) if workers in (None, "auto", 0) else int(workers)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1 (or auto), got {workers}.")
    vps = int(d.get("views_per_scene", 1))
    if vps < 1:
        raise ConfigError(f"views_per_scene must be >= 1, got {vps}.")
    lab = d.get("labels") or {}
    depth = lab.get("depth")
    if depth not in (None, "png16", "npy"):
        raise ConfigError(f"labels.depth must be null, png16 or npy, got {depth!r}.")
    labels = LabelSpec(min_visible_fraction=float(lab.get("min_visible_fraction", 0.1)), min_area_px=int(lab.get("min_area_px", 16)),
                       depth=depth, semantic=bool(lab.get("semantic", False)))
    ph = d.get("physics") or {}
    physics = PhysicsSpec(**{k: type(getattr(PhysicsSpec, k))(v) for k, v in ph.items() if hasattr(PhysicsSpec, k)})
    writer = (d.get("writer") or {}).get("name") if isinstance(d.get("writer"), dict) else d.get("writer", "coco")
    if writer not in ("coco", "webdataset"):
        raise ConfigError(f"writer must be coco or webdataset, got {writer!r}.")
    out = d.get("out")
    if not out:
        raise ConfigError("out is empty; set out=<folder> for the dataset.")
    egl = (d.get("renderer") or {}).get("devices") if isinstance(d.get("renderer"), dict) else None
    return RenderConfig(
        scene=scene_spec(d.get("scene") or {}), randomization=randomization_spec(d.get("randomization") or {}),
        physics=physics, labels=labels, renderer=renderer, n_images=n, seed=int(d.get("seed", 0)), out=Path(out),
        width=w, height=h, image_format=fmt, writer=writer, workers=workers, shard_index=si, shard_count=sc,
        views_per_scene=vps, overwrite=bool(d.get("overwrite", False)), progress=bool(d.get("progress", True)),
        egl_devices=None if egl is None else tuple(int(x) for x in egl), resolved=d)
