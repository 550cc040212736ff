"""Stage 1: draw a scene and its views from a spec. Pure numpy: no PyBullet, no I/O.

Every function takes an explicit ``numpy.random.Generator``; same generator state, same sample.
The targeted-generation knobs (class weights, dice face balance, clusters, wall bias, occluders,
truncation, extreme light; docs/targeted.md) draw only when they are switched on, so a config that
leaves them off draws exactly what it drew before they existed.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from . import assets
from .config import FACE_ASSETS, CameraSpec, ObjectGroup, RandomizationSpec, SceneSpec
from .dists import Dist, Uniform
from .errors import PlacementError
from .types import Camera, Light, ObjectSample, PlacedObject, SceneSample, Sensor, TraySample, ViewSample

Quat = tuple[float, float, float, float]


def random_quaternion(rng: np.random.Generator) -> Quat:
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
          texturable: bool, own_texture: bool = False,
          own_color: tuple[float, float, float, float] | None = None) -> tuple[tuple[float, float, float, float], str | None]:
    texture = None
    if group.texture and group.texture != "bank" and group.texture in banks:
        # A scene's own bank (e.g. dice faces) is part of what the object *is*: always applied.
        texture = banks[group.texture][int(rng.integers(len(banks[group.texture])))]
    elif group.texture == "bank" and r.textures and texturable and banks.get("bank") and rng.random() < r.texture_probability:
        texture = banks["bank"][int(rng.integers(len(banks["bank"])))]
    if not r.colors:  # the mesh's own material colour (MTL Kd), which the renderers would not take from the file
        return (own_color if own_color is not None and texture is None and not own_texture else (1.0, 1.0, 1.0, 1.0)), texture
    if texture is not None or own_texture:
        # textured: only a mild brightness tint (rgba multiplies the texture). A mesh's own texture (a user's
        # product, printed box, can) is what the real object looks like: a random hue would repaint it
        g = float(rng.uniform(0.8, 1.0))
        return (g, g, g, 1.0), texture
    return random_rgba(rng, r), None


# ---------------------------------------------------------------------------- quaternions (xyzw)


def quat_axis_angle(axis: Sequence[float], angle: float) -> Quat:
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    s = math.sin(angle / 2)
    return (float(a[0] * s), float(a[1] * s), float(a[2] * s), math.cos(angle / 2))


def quat_mul(a: Quat, b: Quat) -> Quat:
    """Rotation ``a`` after rotation ``b`` (Hamilton product)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


FACE_TILT_DEG = 4.0  # face-balanced dice start this far (at most) off flat: they land like a die set down by hand, not glued


def face_up(face: int, rng: np.random.Generator) -> Quat:
    """A die orientation with ``face`` (1..6, simgen.assets.DIE_FACES) pointing up, a random turn about the vertical
    and a small tilt. Draws: yaw, tilt direction, tilt angle."""
    n = np.asarray(assets.DIE_FACES[face][0], float)
    axis = np.cross(n, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) < 1e-9:  # already up, or straight down: a half turn about x
        align = (0.0, 0.0, 0.0, 1.0) if n[2] > 0 else quat_axis_angle((1, 0, 0), math.pi)
    else:
        align = quat_axis_angle(axis, math.atan2(float(np.linalg.norm(axis)), float(n[2])))
    yaw = quat_axis_angle((0, 0, 1), float(rng.uniform(0, 2 * math.pi)))
    d = float(rng.uniform(0, 2 * math.pi))
    tilt = quat_axis_angle((math.cos(d), math.sin(d), 0.0), math.radians(float(rng.uniform(0, FACE_TILT_DEG))))
    return quat_mul(tilt, quat_mul(yaw, align))


# ---------------------------------------------------------------------------- which labelled objects


def allocate(rng: np.random.Generator, n: int, weights: Sequence[float]) -> list[int]:
    """``n`` items split over ``len(weights)`` kinds in proportion to the weights, in random order.

    Each kind gets the integer part of its quota ``n * w / sum(w)``; the few items left go to kinds by systematic
    sampling on the fractional parts. So every kind's expected count is exactly its quota (the asked balance holds
    over any number of scenes, not only on average over many) and a scene is never more than one item off it."""
    w = np.asarray(weights, float)
    quota = n * w / w.sum()
    counts = np.floor(quota + 1e-9).astype(int)
    left = n - int(counts.sum())
    if left > 0:
        edges = np.cumsum(quota - counts)
        picks = rng.random() + np.arange(left)
        counts += np.bincount(np.minimum(np.searchsorted(edges, picks, side="right"), len(w) - 1), minlength=len(w))
    return [int(k) for k in rng.permutation(np.repeat(np.arange(len(w)), counts))]


def labelled_groups(rng: np.random.Generator, spec: SceneSpec) -> list[ObjectGroup]:
    """The labelled objects of a scene, one group entry per object.

    Without weights or a total, each group draws its own ``count`` (the class balance follows the count ranges).
    With ``scene.objects_total`` (or any weight other than 1) the total is drawn first, from ``objects_total`` or
    as the sum of the groups' count draws (so objects per image keep their distribution), and split over the
    groups by weight with :func:`allocate`: category c gets w_c / sum(w) of the objects, whatever the counts say."""
    if spec.objects_total is None and all(g.weight == 1 for g in spec.objects):
        return [g for g in spec.objects for _ in range(int(g.count.sample(rng)))]
    n = int(spec.objects_total.sample(rng)) if spec.objects_total is not None else sum(int(g.count.sample(rng)) for g in spec.objects)
    return [spec.objects[k] for k in allocate(rng, n, [g.weight for g in spec.objects])]


def face_plan(rng: np.random.Generator, spec: SceneSpec, chosen: Sequence[ObjectGroup]) -> dict[int, int]:
    """{index into ``chosen``: face to put up} for the dice that scene.face_balance lays down; faces by weight."""
    fb = spec.face_balance
    if fb is None or fb.probability <= 0:
        return {}
    dice = [k for k, g in enumerate(chosen) if g.category is not None and set(g.assets) <= set(FACE_ASSETS) and rng.random() < fb.probability]
    return {k: face + 1 for k, face in zip(dice, allocate(rng, len(dice), fb.weights))}


# ---------------------------------------------------------------------------- where objects start


MAX_STACK = 0.5  # metres: objects that find no free spot are dropped from above the others, up to this height
# Objects a knob places on purpose (a cluster member, or one against a wall) are set down rather than thrown: dropped
# from SET_DOWN_DROP of a drop_height draw and spun at SET_DOWN_SPIN of a spin draw. Dropped and spun like the others,
# dice bounce one to three edge lengths away from where they start and part of the placement is lost (measured with
# benchmarks/targeted_stats.py: 18% instead of 39% of the dice against a wall with wall_bias=1).
SET_DOWN_DROP = 0.2
SET_DOWN_SPIN = 0.25
WALL_AIM = 0.4  # radians: objects against a wall are pushed at it within this angle of its normal ...
WALL_SPEED = 0.05  # m/s: ... this fast: enough to close the gap a landing leaves, too slow to bounce back off it
HANDFUL_SPEED = 0.3  # a cluster's shared throw: this share of one throw_speed draw, the same for all its members
HANDFUL_TRIES = 4  # a member takes the lowest of this many spots beside its cluster: next to one neighbour, not on a tower


def _above(p: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """``p`` raised just enough that its bounding sphere clears every placed one."""
    z = max([p[2]] + [q[2] + math.sqrt(max((radius + rq) ** 2 - float(np.sum((p[:2] - q[:2]) ** 2)), 0.0)) + 1e-3
                      for q, rq in placed])
    return np.array([p[0], p[1], z])


@dataclass(frozen=True)
class Ground:
    """Where a scene's objects may start: the drop region's half extents, the floor height, the tray if any."""

    region: tuple[float, float]
    floor_z: float
    tray: TraySample | None

    def half(self, margin: float) -> tuple[float, float]:
        return max(self.region[0] - margin, 1e-3), max(self.region[1] - margin, 1e-3)

    def inner(self, margin: float) -> np.ndarray:
        """Half extents a start position may reach: the tray's inside when there is one (walls included)."""
        return np.array(self.half(margin)) if self.tray is None else np.maximum(np.array(self.tray.half_extents) - margin, 1e-3)


@dataclass(frozen=True)
class Spot:
    """How to draw one object's start: ``propose()`` gives candidate x, y; ``heading`` (radians) and ``speed`` (m/s)
    override the throw. ``stacked``: take the lowest of HANDFUL_TRIES proposals, raised over what is there (cluster
    members: they land on each other and settle touching); otherwise look for a free spot. ``set_down``: a low drop
    and little spin."""

    propose: Callable[[], tuple[float, float]]
    stacked: bool = False
    set_down: bool = False
    heading: float | None = None
    speed: float | None = None


def _uniform(rng: np.random.Generator, hx: float, hy: float) -> Callable[[], tuple[float, float]]:
    return lambda: (float(rng.uniform(-hx, hx)), float(rng.uniform(-hy, hy)))


def _wall(rng: np.random.Generator, tray: TraySample, margin: float) -> tuple[Callable[[], tuple[float, float]], float]:
    """Spots along one tray wall (chosen by its length) whose bounding circle of radius ``margin`` touches it, and
    the heading that pushes at it."""
    hx, hy = tray.half_extents
    side = int(rng.choice(4, p=np.array([hy, hy, hx, hx]) / (2 * hx + 2 * hy)))  # +x, -x, +y, -y walls
    sign = 1.0 if side % 2 == 0 else -1.0
    heading = (0.0 if sign > 0 else math.pi) if side < 2 else (math.pi / 2 if sign > 0 else -math.pi / 2)
    heading += float(rng.uniform(-WALL_AIM, WALL_AIM))
    along = max((hy if side < 2 else hx) - margin, 1e-3)
    off = sign * max((hx if side < 2 else hy) - margin, 0.0)
    return (lambda: (off, float(rng.uniform(-along, along))) if side < 2 else (float(rng.uniform(-along, along)), off)), heading


def _wall_biased(rng: np.random.Generator, spec: SceneSpec, ground: Ground) -> bool:
    bias = spec.tray.wall_bias if spec.tray is not None else 0.0
    return ground.tray is not None and bias > 0 and bool(rng.random() < bias)


class Handful:
    """One cluster while it is being placed: the first member starts at its centre, each next one beside a random
    earlier member, ``spacing`` times the sum of their bounding radii away (below 1 they overlap in plan, so the
    newcomer is stacked on its neighbour and slides off against it; of HANDFUL_TRIES such spots the lowest, so
    clusters spread sideways instead of growing towers). All share one gentle throw."""

    def __init__(self, rng: np.random.Generator, spec: SceneSpec, ground: Ground, radius: float) -> None:
        cl = spec.cluster
        assert cl is not None
        self.left, self.spacing, self.lim = max(1, int(cl.size.sample(rng))), cl.spacing, ground.inner(radius)
        if _wall_biased(rng, spec, ground):  # a cluster against a wall, pushed at it like a single object
            propose, self.heading = _wall(rng, ground.tray, radius)  # type: ignore[arg-type]
            self.speed = WALL_SPEED
        else:
            propose, self.heading = _uniform(rng, *ground.half(radius)), float(rng.uniform(0, 2 * math.pi))
            self.speed = HANDFUL_SPEED * float(spec.throw_speed.sample(rng))
        self.centre = np.array(propose())
        self.members: list[tuple[np.ndarray, float]] = []

    def spot(self, rng: np.random.Generator, radius: float) -> Spot:
        def propose() -> tuple[float, float]:
            if not self.members:
                return float(self.centre[0]), float(self.centre[1])
            base, rb = self.members[int(rng.integers(len(self.members)))]
            t, d = float(rng.uniform(0, 2 * math.pi)), float(self.spacing.sample(rng)) * (rb + radius)
            xy = np.clip(base + d * np.array([math.cos(t), math.sin(t)]), -self.lim, self.lim)
            return float(xy[0]), float(xy[1])

        self.left -= 1
        return Spot(propose, stacked=True, set_down=True, heading=self.heading, speed=self.speed)

    def add(self, p: np.ndarray, radius: float) -> None:
        self.members.append((p[:2], radius))


def _position(rng: np.random.Generator, spot: Spot, radius: float, drop: Dist, placed: list[tuple[np.ndarray, float]],
              ground: Ground, n_objects: int) -> np.ndarray:
    """A start position whose bounding sphere clears the placed ones: a free spot at drop height when one is found
    (cluster members: their spot, raised over what is there), else the lowest of 32 spots raised over the pile;
    an absurd pile is a placement failure."""
    z0, low = ground.floor_z + radius, SET_DOWN_DROP if spot.set_down else 1.0
    if spot.stacked:
        p = min((_above(np.array([*spot.propose(), z0 + drop.sample(rng) * low]), radius, placed) for _ in range(HANDFUL_TRIES)),
                key=lambda c: c[2])
        if p[2] - ground.floor_z > MAX_STACK:  # a tower (big objects, crowded cluster): this one starts alone instead
            spot = replace(spot, propose=_uniform(rng, *ground.half(radius)), stacked=False)
    if not spot.stacked:
        for _ in range(100):
            p = np.array([*spot.propose(), z0 + drop.sample(rng) * low])
            if all(np.linalg.norm(p - q) > radius + rq for q, rq in placed):
                return p
        # No free spot at drop height: drop this object from above the ones it would overlap, and let
        # physics settle the pile. Redrawing instead would bias crowded scenes away (a third of tabletop
        # draws), so only an absurd pile is a placement failure.
        p = min((_above(np.array([*spot.propose(), p[2]]), radius, placed) for _ in range(32)), key=lambda c: c[2])
    if p[2] - ground.floor_z > MAX_STACK:
        region = ground.region
        raise PlacementError(f"cannot place {n_objects} objects without overlap in a {2 * region[0]:.2f} x "
                             f"{2 * region[1]:.2f} m region; lower the object counts or scales, or raise scene.area.")
    return p


def _spot(rng: np.random.Generator, spec: SceneSpec, ground: Ground, g: ObjectGroup, radius: float, handful: Handful | None) -> Spot:
    """Where a labelled object starts: in its cluster, against a wall (scene.tray.wall_bias), or anywhere."""
    if handful is not None:
        return handful.spot(rng, radius)
    if g.category is not None and _wall_biased(rng, spec, ground):
        propose, heading = _wall(rng, ground.tray, radius)  # type: ignore[arg-type]
        return Spot(propose, set_down=True, heading=heading, speed=WALL_SPEED)
    return Spot(_uniform(rng, *ground.half(radius)))


def pick_asset(rng: np.random.Generator, g: ObjectGroup) -> tuple[str, str]:
    """(asset, the name its labels give it) of one object of ``g``: one of its files, drawn uniformly, where it names
    several; else its one asset, with nothing drawn (scenes of single-asset groups sample exactly as before sets)."""
    if not g.choices:
        return g.asset, g.asset
    k = int(rng.integers(len(g.choices)))
    return g.choices[k], g.choice_names[k]


def _draw_objects(rng: np.random.Generator, spec: SceneSpec, r: RandomizationSpec, banks: dict[str, tuple[str, ...]],
                  ground: Ground) -> tuple[ObjectSample, ...]:
    groups = labelled_groups(rng, spec)
    for g in spec.distractors if r.distractors else ():
        groups += [g] * int(g.count.sample(rng))
    groups = groups[: spec.max_objects]
    faces = face_plan(rng, spec, groups)
    clustered = spec.cluster is not None and spec.cluster.probability > 0 and bool(rng.random() < spec.cluster.probability)
    placed: list[tuple[np.ndarray, float]] = []
    out: list[ObjectSample] = []
    handful: Handful | None = None
    for k, g in enumerate(groups):
        name, label = pick_asset(rng, g)
        a = assets.resolve(name)
        scale = snap_scale(g, float(g.scale.sample(rng)))
        radius = a.radius * scale
        if clustered and g.category is not None and (handful is None or handful.left == 0):
            handful = Handful(rng, spec, ground, radius)
        member = handful if clustered and g.category is not None else None
        spot = _spot(rng, spec, ground, g, radius, member)
        p = _position(rng, spot, radius, spec.drop_height, placed, ground, len(groups))
        if member is not None:
            member.add(p, radius)
        placed.append((p, radius))
        rgba, texture = _look(rng, g, r, banks, a.texturable, a.own_texture, a.own_color)
        speed, heading = spec.throw_speed.sample(rng), rng.uniform(0, 2 * math.pi)
        spin = rng.normal(size=3) * spec.spin.sample(rng) * (SET_DOWN_SPIN if spot.set_down else 1.0)
        orientation = random_quaternion(rng)
        speed = speed if spot.speed is None else spot.speed
        heading = heading if spot.heading is None else spot.heading
        if k in faces:  # laid down with its face up, thrown and spun gently so that it mostly stays
            orientation = face_up(faces[k], rng)
            fb = spec.face_balance
            assert fb is not None
            speed, spin = fb.throw_speed.sample(rng), rng.normal(size=3) * fb.spin.sample(rng)
        out.append(ObjectSample(asset=name, category=g.category, scale=scale, position=tuple(float(x) for x in p),  # type: ignore[arg-type]
                                orientation=orientation, rgba=rgba, texture=texture, label_asset=label,
                                linear_velocity=(float(speed * math.cos(heading)), float(speed * math.sin(heading)), 0.0),
                                angular_velocity=tuple(float(x) for x in spin), mass=g.mass))  # type: ignore[arg-type]
    return tuple(out) + _occluders(rng, spec, r, banks, out, spec.max_objects - len(out))


OCCLUDER_OFFSET = 0.35  # occluders start this many of their object's bounding radii (std) off its centre, sideways
OCCLUDER_GAP = 0.001  # metres: and this far above the highest surface under them (simgen.physics._onto)


def _occluders(rng: np.random.Generator, spec: SceneSpec, r: RandomizationSpec, banks: dict[str, tuple[str, ...]],
               objects: list[ObjectSample], room: int) -> tuple[ObjectSample, ...]:
    """randomization.occluders: with its probability, a few of the scene's distractors set down onto labelled objects
    once those have settled (``anchor``; simgen.physics drops them), lying flat with a random turn, a little off
    centre: most come to rest on the object or lean against it and hide part of it from above."""
    occ = r.occluders
    labelled = [k for k, o in enumerate(objects) if o.labelled]
    if not (r.distractors and occ is not None and occ.probability > 0 and spec.distractors and labelled):
        return ()
    if not rng.random() < occ.probability:
        return ()
    out = []
    for _ in range(min(int(occ.count.sample(rng)), max(room, 0))):
        g = spec.distractors[int(rng.integers(len(spec.distractors)))]
        name, label = pick_asset(rng, g)
        a = assets.resolve(name)
        scale = snap_scale(g, float(g.scale.sample(rng)))
        k = labelled[int(rng.integers(len(labelled)))]
        below = objects[k]
        dx, dy = rng.normal(0.0, OCCLUDER_OFFSET * assets.resolve(below.asset).radius * below.scale, 2)
        dz = OCCLUDER_GAP
        orientation = quat_axis_angle((0, 0, 1), float(rng.uniform(0, 2 * math.pi)))
        rgba, texture = _look(rng, g, r, banks, a.texturable, a.own_texture, a.own_color)
        out.append(ObjectSample(asset=name, category=None, scale=scale, position=(float(dx), float(dy), dz), orientation=orientation,
                                rgba=rgba, texture=texture, anchor=k, mass=g.mass, label_asset=label))
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
                          floor_rgba=_ground_rgba(rng, r, spec, floor_tex is not None), wall_rgba=random_rgba(rng, r) if r.colors else (0.2, 0.2, 0.2, 1))
        region = (min(region[0], hx), min(region[1], hy))
    ground_tex = _bank_pick(rng, banks, r) if r.ground else None
    ground_rgba = _ground_rgba(rng, r, spec, ground_tex is not None)
    objects = _draw_objects(rng, spec, r, banks, Ground(region=region, floor_z=floor_z, tray=tray))
    return SceneSample(objects=objects, ground_texture=ground_tex, ground_rgba=ground_rgba, tray=tray)


def _bank_pick(rng: np.random.Generator, banks: dict[str, tuple[str, ...]], r: RandomizationSpec) -> str | None:
    keys = banks.get("ground") or banks.get("bank") or ()
    if not r.textures or not keys or rng.random() >= r.ground_texture_probability:
        return None
    return keys[int(rng.integers(len(keys)))]


def _ground_rgba(rng: np.random.Generator, r: RandomizationSpec, spec: SceneSpec,
                 textured: bool = False) -> tuple[float, float, float, float]:
    if not r.ground:
        return spec.ground_rgba
    v = r.ground_value.sample(rng)
    s = r.ground_saturation.sample(rng)
    h = rng.random()
    if textured:  # the texture's palette sets its colour: a hue tint would turn white paper pink; vary brightness only
        g = 0.6 + 0.4 * v
        return (g, g, g, 1.0)
    return (*colorsys.hsv_to_rgb(h, s, v), 1.0)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- views


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
    # "up" in the image: world up as the tilted camera sees it (the heading when looking straight down),
    # so a tilted view shows the far side at the top like a photo; then roll about the optical axis.
    # (It was the horizontal at right angles to the heading, which put the horizon down a side of the image.)
    heading = np.array([-math.cos(az), -math.sin(az), 0.0])
    up0 = math.cos(tilt) * heading + math.sin(tilt) * np.array([0.0, 0.0, 1.0])  # unit, and at right angles to forward
    right = np.cross(forward, up0)
    up = math.cos(roll) * up0 + math.sin(roll) * right
    if spec.K is not None:
        fx, fy, cx, cy = spec.K
    else:
        fy = height / (2 * math.tan(math.radians(spec.fov_deg.sample(rng)) / 2))
        fx, cx, cy = fy, width / 2, height / 2
    return Camera(width=width, height=height, fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
                  eye=tuple(float(x) for x in eye), target=tuple(float(x) for x in target),  # type: ignore[arg-type]
                  up=tuple(float(x) for x in up), near=spec.near, far=spec.far)  # type: ignore[arg-type]


TRUNCATION_CUT = 0.45  # the frame edge crosses an anchor object within this many bounding radii of its centre
TRUNCATION_ANCHORS = 3  # the anchor is one of the labelled objects this close to an image edge (nearest first)


def _camera_axes(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right, down and forward unit vectors of the camera (OpenCV axes) in world coordinates."""
    eye, target, up = (np.asarray(v, float) for v in (camera.eye, camera.target, camera.up))
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    return right, np.cross(forward, right), forward


def truncate(camera: Camera, spec: CameraSpec, objects: Sequence[PlacedObject], rng: np.random.Generator) -> Camera:
    """scene.camera.truncation_probability: with that chance, slide the camera sideways (eye and target together,
    along its own image axes, so nothing else about the view changes) until an image edge crosses a labelled object.
    The object is drawn among the TRUNCATION_ANCHORS nearest an edge, and the nearest edge is used: the smallest
    slides, so the rest of the scene mostly stays in view. Labels follow from the render as always: the box is
    the visible mask's, clipped by the frame, ``truncated`` is set and ``visible_fraction`` counts the cut-off part
    as hidden."""
    if spec.truncation_probability <= 0 or not rng.random() < spec.truncation_probability:
        return camera
    right, down, forward = _camera_axes(camera)
    eye = np.asarray(camera.eye, float)
    cands = []  # (distance in pixels to the nearest edge, edge, u, v, depth, object)
    for o in objects:
        rel = np.asarray(o.position, float) - eye
        z = float(rel @ forward)
        if o.category is None or z <= camera.near:
            continue
        u, v = camera.fx * float(rel @ right) / z + camera.cx, camera.fy * float(rel @ down) / z + camera.cy
        gaps = [u, camera.width - u, v, camera.height - v]
        side = int(np.argmin(gaps))
        cands.append((gaps[side], side, u, v, z, o))
    if not cands:
        return camera
    cands.sort(key=lambda c: c[0])
    _, side, u, v, z, o = cands[int(rng.integers(min(TRUNCATION_ANCHORS, len(cands))))]
    cut = float(rng.uniform(-TRUNCATION_CUT, TRUNCATION_CUT))  # > 0: centre inside the frame, more of it visible
    rad = assets.resolve(o.sample.asset).radius * o.sample.scale
    if side < 2:
        goal = cut * camera.fx * rad / z if side == 0 else camera.width - cut * camera.fx * rad / z
        shift = (u - goal) * z / camera.fx * right
    else:
        goal = cut * camera.fy * rad / z if side == 2 else camera.height - cut * camera.fy * rad / z
        shift = (v - goal) * z / camera.fy * down
    return replace(camera, eye=tuple(float(x) for x in eye + shift),  # type: ignore[arg-type]
                   target=tuple(float(x) for x in np.asarray(camera.target, float) + shift))


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


# randomization.light.extreme_probability: (ambient, diffuse, specular, exposure) ranges of the three extremes; None keeps
# the drawn value. Exposure scales the sensor's brightness: EGL ignores the light coefficients, so it is what makes an
# extreme light show there too.
EXTREME_LIGHTS = {
    "dark": ((0.05, 0.25), (0.1, 0.35), None, (0.5, 0.8)),
    "bright": ((0.85, 1.0), (0.6, 0.9), None, (1.15, 1.45)),
    "glare": (None, None, (0.6, 1.0), None),  # TinyRenderer's specular term brightens whole faces: above ~1 all is white
}


def extreme_light(light: Light, r: RandomizationSpec, rng: np.random.Generator) -> tuple[Light, float]:
    """With randomization.light.extreme_probability, one of EXTREME_LIGHTS (uniformly) replaces the light's
    coefficients; returns the light and the exposure factor for the sensor (1 when nothing changes)."""
    if r.light is None or r.light.extreme_probability <= 0 or not rng.random() < r.light.extreme_probability:
        return light, 1.0
    amb, dif, spec, exp = EXTREME_LIGHTS[list(EXTREME_LIGHTS)[int(rng.integers(len(EXTREME_LIGHTS)))]]
    draw = (lambda rg, old: old if rg is None else float(rng.uniform(*rg)))  # noqa: E731
    light = replace(light, ambient=draw(amb, light.ambient), diffuse=draw(dif, light.diffuse), specular=draw(spec, light.specular))
    return light, draw(exp, 1.0)


def sample_sensor(r: RandomizationSpec, rng: np.random.Generator) -> Sensor:
    s = r.sensor
    if not s.enabled:
        return Sensor()
    blur = s.blur_sigma.sample(rng) if rng.random() < s.blur_probability else 0.0
    base = Sensor(noise_std=s.noise_std.sample(rng), blur_sigma=blur, brightness=s.brightness.sample(rng),
                  contrast=s.contrast.sample(rng), saturation=s.saturation.sample(rng), jpeg_quality=int(s.jpeg_quality.sample(rng)))
    # Lens effects after the original draws (keyword arguments evaluate left to right: a fixed order).
    motion = _maybe(rng, s.motion_blur_probability, s.motion_blur_length)
    return replace(base, noise_chroma=float(s.noise_chroma.sample(rng)), vignette=_maybe(rng, s.vignette_probability, s.vignette),
                   defocus_radius=_maybe(rng, s.defocus_probability, s.defocus_radius), motion_length=motion,
                   motion_angle=float(rng.uniform(0, 180)) if motion > 0 else 0.0)


def _maybe(rng: np.random.Generator, probability: float, value: Dist) -> float:
    """``value`` drawn with ``probability``, else 0 (the effect is off)."""
    return float(value.sample(rng)) if rng.random() < probability else 0.0


def sample_view(spec: SceneSpec, r: RandomizationSpec, width: int, height: int, rng: np.random.Generator,
                objects: Sequence[PlacedObject] = ()) -> ViewSample:
    """Camera, light and sensor of one view; ``objects`` (the settled scene) anchor the truncation knob."""
    camera = truncate(look_at_camera(spec.camera, width, height, rng), spec.camera, objects, rng)
    light, exposure = extreme_light(sample_light(r, rng), r, rng)
    sensor = sample_sensor(r, rng)
    if exposure != 1.0:
        sensor = replace(sensor, brightness=sensor.brightness * exposure)
    return ViewSample(camera=camera, light=light, sensor=sensor)


__all__ = ["sample_scene", "sample_view", "look_at_camera", "random_quaternion", "allocate", "face_up", "Uniform"]
