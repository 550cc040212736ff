"""Stage 1: draw a scene and its views from a spec. Pure numpy: no PyBullet, no I/O.

Every function takes an explicit ``numpy.random.Generator``; same generator state, same sample.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np

from . import assets
from .config import CameraSpec, ObjectGroup, RandomizationSpec, SceneSpec
from .dists import Uniform
from .errors import PlacementError
from .types import Camera, Light, ObjectSample, SceneSample, Sensor, TraySample, ViewSample


def random_quaternion(rng: np.random.Generator) -> tuple[float, float, float, float]:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return tuple(float(x) for x in q)  # type: ignore[return-value]


def random_rgba(rng: np.random.Generator, r: RandomizationSpec) -> tuple[float, float, float, float]:
    h, s, v = rng.random(), r.color_saturation.sample(rng), r.color_value.sample(rng)
    return (*colorsys.hsv_to_rgb(h, s, v), 1.0)  # type: ignore[return-value]


def snap_scale(group: ObjectGroup, value: float) -> float:
    """Snap a drawn scale to one of ``scale_bins`` levels, so render-side meshes can be pooled."""
    lo, hi = getattr(group.scale, "min", value), getattr(group.scale, "max", value)
    if not isinstance(lo, (int, float)) or hi <= lo or group.scale_bins <= 1:
        return float(value)
    step = (hi - lo) / (group.scale_bins - 1)
    return float(lo + round((value - lo) / step) * step)


def _look(rng: np.random.Generator, group: ObjectGroup, r: RandomizationSpec, banks: dict[str, tuple[str, ...]],
          texturable: bool) -> tuple[tuple[float, float, float, float], str | None]:
    texture = None
    if group.texture and group.texture != "bank" and group.texture in banks:
        # A scene's own bank (e.g. dice faces) is part of what the object *is*: always applied.
        texture = banks[group.texture][int(rng.integers(len(banks[group.texture])))]
    elif group.texture == "bank" and r.textures and texturable and banks.get("bank") and rng.random() < r.texture_probability:
        texture = banks["bank"][int(rng.integers(len(banks["bank"])))]
    if not r.colors:
        return (1.0, 1.0, 1.0, 1.0), texture
    if texture is not None:
        g = float(rng.uniform(0.8, 1.0))  # textured: only a mild brightness tint (rgba multiplies the texture)
        return (g, g, g, 1.0), texture
    return random_rgba(rng, r), None


MAX_STACK = 0.5  # metres: objects that find no free spot are dropped from above the others, up to this height


def _above(p: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """``p`` raised just enough that its bounding sphere clears every placed one."""
    z = max([p[2]] + [q[2] + math.sqrt(max((radius + rq) ** 2 - float(np.sum((p[:2] - q[:2]) ** 2)), 0.0)) + 1e-3
                      for q, rq in placed])
    return np.array([p[0], p[1], z])


def _draw_objects(rng: np.random.Generator, spec: SceneSpec, r: RandomizationSpec, banks: dict[str, tuple[str, ...]],
                  floor_z: float, region: tuple[float, float]) -> tuple[ObjectSample, ...]:
    groups = list(spec.objects) + (list(spec.distractors) if r.distractors else [])
    chosen: list[tuple[ObjectGroup, assets.Asset]] = []
    for g in groups:
        n = int(g.count.sample(rng))
        chosen += [(g, assets.resolve(g.asset))] * n
    chosen = chosen[: spec.max_objects]
    placed: list[tuple[np.ndarray, float]] = []
    out = []
    for g, a in chosen:
        scale = snap_scale(g, float(g.scale.sample(rng)))
        radius = a.radius * scale
        hx, hy = max(region[0] - radius, 1e-3), max(region[1] - radius, 1e-3)
        for _ in range(100):
            p = np.array([rng.uniform(-hx, hx), rng.uniform(-hy, hy), floor_z + radius + spec.drop_height.sample(rng)])
            if all(np.linalg.norm(p - q) > radius + rq for q, rq in placed):
                break
        else:
            # No free spot at drop height: drop this object from above the ones it would overlap, and let
            # physics settle the pile. Redrawing instead would bias crowded scenes away (a third of tabletop
            # draws), so only an absurd pile is a placement failure.
            p = min((_above(np.array([rng.uniform(-hx, hx), rng.uniform(-hy, hy), p[2]]), radius, placed) for _ in range(32)),
                    key=lambda c: c[2])
            if p[2] - floor_z > MAX_STACK:
                raise PlacementError(f"cannot place {len(chosen)} objects without overlap in a {2 * region[0]:.2f} x "
                                     f"{2 * region[1]:.2f} m region; lower the object counts or scales, or raise scene.area.")
        placed.append((p, radius))
        rgba, texture = _look(rng, g, r, banks, a.texturable)
        speed, heading = spec.throw_speed.sample(rng), rng.uniform(0, 2 * math.pi)
        spin = rng.normal(size=3) * spec.spin.sample(rng)
        out.append(ObjectSample(asset=g.asset, category=g.category, scale=scale, position=tuple(float(x) for x in p),  # type: ignore[arg-type]
                                orientation=random_quaternion(rng), rgba=rgba, texture=texture,
                                linear_velocity=(float(speed * math.cos(heading)), float(speed * math.sin(heading)), 0.0),
                                angular_velocity=tuple(float(x) for x in spin)))  # type: ignore[arg-type]
    return tuple(out)


def sample_scene(spec: SceneSpec, r: RandomizationSpec, banks: dict[str, tuple[str, ...]], rng: np.random.Generator) -> SceneSample:
    """Draw a scene, or raise :class:`PlacementError` when its objects do not fit.

    One attempt only: the pipeline redraws a failed scene from a fresh generator seeded by
    ``[seed, i, attempt]`` (:func:`simgen.pipeline.draw_scene`), so a rare unplaceable draw costs one
    redraw instead of ending the job, and the redraw is the same whatever the workers or shards."""
    tray = None
    region = spec.area
    floor_z = 0.0
    if spec.tray is not None and rng.random() < spec.tray.probability:
        # Sizes snap to 5 mm so the render world can reuse tray meshes (no per-scene shapes: they leak).
        half = round(float(spec.tray.half_extents.sample(rng)) / 0.005) * 0.005
        aspect = float(rng.uniform(0.75, 1.0))
        short = round(half * aspect / 0.005) * 0.005
        hx, hy = (half, short) if rng.random() < 0.5 else (short, half)
        floor_tex = _bank_pick(rng, banks, r) if r.ground else None
        tray = TraySample(half_extents=(hx, hy), wall_height=round(float(spec.tray.wall_height.sample(rng)) / 0.005) * 0.005,
                          wall_thickness=spec.tray.wall_thickness, floor_texture=floor_tex,
                          floor_rgba=_ground_rgba(rng, r, spec), wall_rgba=random_rgba(rng, r) if r.colors else (0.2, 0.2, 0.2, 1))
        region = (min(region[0], hx), min(region[1], hy))
    ground_tex = _bank_pick(rng, banks, r) if r.ground else None
    ground_rgba = _ground_rgba(rng, r, spec)
    objects = _draw_objects(rng, spec, r, banks, floor_z, region)
    return SceneSample(objects=objects, ground_texture=ground_tex, ground_rgba=ground_rgba, tray=tray)


def _bank_pick(rng: np.random.Generator, banks: dict[str, tuple[str, ...]], r: RandomizationSpec) -> str | None:
    keys = banks.get("ground") or banks.get("bank") or ()
    if not r.textures or not keys or rng.random() >= r.ground_texture_probability:
        return None
    return keys[int(rng.integers(len(keys)))]


def _ground_rgba(rng: np.random.Generator, r: RandomizationSpec, spec: SceneSpec) -> tuple[float, float, float, float]:
    if not r.ground:
        return spec.ground_rgba
    v = r.ground_value.sample(rng)
    s = rng.uniform(0, 0.3)
    return (*colorsys.hsv_to_rgb(rng.random(), s, v), 1.0)  # type: ignore[return-value]


def look_at_camera(spec: CameraSpec, width: int, height: int, rng: np.random.Generator, jitter: bool = True) -> Camera:
    """A camera looking down at the scene centre from ``distance``, tilted, rotated and rolled."""
    d = spec.distance.sample(rng)
    tilt = math.radians(spec.tilt_deg.sample(rng))
    az = math.radians(spec.azimuth_deg.sample(rng))
    roll = math.radians(spec.roll_deg.sample(rng))
    j = spec.target_jitter.sample(rng) if jitter else 0.0
    target = np.array([rng.uniform(-j, j), rng.uniform(-j, j), 0.0])
    eye = target + d * np.array([math.sin(tilt) * math.cos(az), math.sin(tilt) * math.sin(az), math.cos(tilt)])
    forward = (target - eye) / np.linalg.norm(target - eye)
    # "up" in the image: start from the horizontal heading, then roll about the optical axis.
    ref = np.array([math.cos(az + math.pi / 2), math.sin(az + math.pi / 2), 0.0])
    right = np.cross(forward, ref)
    right /= np.linalg.norm(right)
    up0 = np.cross(right, forward)
    up = math.cos(roll) * up0 + math.sin(roll) * right
    if spec.K is not None:
        fx, fy, cx, cy = spec.K
    else:
        fy = height / (2 * math.tan(math.radians(spec.fov_deg.sample(rng)) / 2))
        fx, cx, cy = fy, width / 2, height / 2
    return Camera(width=width, height=height, fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
                  eye=tuple(float(x) for x in eye), target=tuple(float(x) for x in target),  # type: ignore[arg-type]
                  up=tuple(float(x) for x in up), near=spec.near, far=spec.far)  # type: ignore[arg-type]


def sample_light(r: RandomizationSpec, rng: np.random.Generator) -> Light:
    if r.light is None:
        return Light(direction=(0.3, 0.3, 1.0), color=(1, 1, 1), distance=10.0, ambient=0.6, diffuse=0.5, specular=0.1, shadow=False)
    el = math.radians(r.light.elevation_deg.sample(rng))
    az = math.radians(r.light.azimuth_deg.sample(rng))
    direction = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    c = 1 - r.light.color_jitter * rng.random(3)
    return Light(direction=tuple(float(x) for x in direction), color=tuple(float(x) for x in c / c.max()),  # type: ignore[arg-type]
                 distance=10.0, ambient=r.light.ambient.sample(rng), diffuse=r.light.diffuse.sample(rng),
                 specular=r.light.specular.sample(rng), shadow=bool(rng.random() < r.light.shadow_probability))


def sample_sensor(r: RandomizationSpec, rng: np.random.Generator) -> Sensor:
    s = r.sensor
    if not s.enabled:
        return Sensor()
    blur = s.blur_sigma.sample(rng) if rng.random() < s.blur_probability else 0.0
    return Sensor(noise_std=s.noise_std.sample(rng), blur_sigma=blur, brightness=s.brightness.sample(rng),
                  contrast=s.contrast.sample(rng), saturation=s.saturation.sample(rng), jpeg_quality=int(s.jpeg_quality.sample(rng)))


def sample_view(spec: SceneSpec, r: RandomizationSpec, width: int, height: int, rng: np.random.Generator) -> ViewSample:
    return ViewSample(camera=look_at_camera(spec.camera, width, height, rng), light=sample_light(r, rng), sensor=sample_sensor(r, rng))


__all__ = ["sample_scene", "sample_view", "look_at_camera", "random_quaternion", "Uniform"]
