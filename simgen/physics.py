"""Stage 2: drop the sampled objects and step until they are at rest.

The physics client is reset for every scene, so a scene's settled poses depend on its sample alone,
never on the scenes a worker simulated before (the world is "clean", see DESIGN.md section 4). Only
cheap collision geometry lives here; the visual pool lives in the render world.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pybullet as p
from pybullet_utils.bullet_client import BulletClient

from . import assets
from .config import PhysicsSpec
from .errors import AssetError, SimulationError
from .types import ObjectSample, PlacedObject, SceneSample, SceneState, TraySample

Pose = tuple[tuple[float, float, float], tuple[float, float, float, float]]


def com_to_link(client: BulletClient, body: int, pos, orn) -> Pose:
    """``getBasePositionAndOrientation`` gives the centre-of-mass frame (bullet3 #2096); labels want the
    URDF link frame: compose with the inverse of the local inertial frame."""
    lpos, lorn = client.getDynamicsInfo(body, -1)[3:5]
    ipos, iorn = client.invertTransform(lpos, lorn)
    return client.multiplyTransforms(pos, orn, ipos, iorn)


def link_to_com(client: BulletClient, body: int, pos, orn) -> Pose:
    lpos, lorn = client.getDynamicsInfo(body, -1)[3:5]
    return client.multiplyTransforms(pos, orn, lpos, lorn)


def tray_boxes(tray: TraySample) -> list[tuple[tuple[float, float, float], tuple[float, float, float], str]]:
    """(half extents, centre, part) of the tray's four walls. The tray's floor is the ground itself,
    drawn in the tray's floor colour: one fewer mesh per tray size keeps the render pool small."""
    hx, hy = tray.half_extents
    t, h = tray.wall_thickness, tray.wall_height
    return [((t / 2, hy + t, h / 2), (hx + t / 2, 0.0, h / 2), "wall"), ((t / 2, hy + t, h / 2), (-hx - t / 2, 0.0, h / 2), "wall"),
            ((hx, t / 2, h / 2), (0.0, hy + t / 2, h / 2), "wall"), ((hx, t / 2, h / 2), (0.0, -hy - t / 2, h / 2), "wall")]


def body_mass(obj: ObjectSample) -> float:
    """Mass (kg) of a non-URDF body: ``scene.objects.<cat>.mass`` when set, else 4 g for a die and 100 g for anything else."""
    return obj.mass if obj.mass is not None else 0.004 if obj.asset in ("die", "die_round") else 0.1


OCCLUDER_MASS = 0.5  # an occluder's mass, as a share of the mass of the object it is set down on


def _radius(obj: ObjectSample) -> float:
    return assets.resolve(obj.asset).radius * obj.scale


def _extent_z(obj: ObjectSample, orn) -> tuple[float, float]:
    """Lowest and highest z of the object's surface points, relative to its link origin, in orientation ``orn``."""
    from .annotate import quat_to_matrix

    z = (assets.resolve(obj.asset).hull_points * obj.scale) @ quat_to_matrix(orn)[2]  # a plane's extremes lie on the hull
    return float(z.min()), float(z.max())


def _onto(obj: ObjectSample, anchor: np.ndarray, rest: list[tuple[ObjectSample, np.ndarray, tuple]]) -> tuple[float, float, float]:
    """Start of an occluder: its offset (``obj.position``) from its anchor's settled position, just above the highest
    settled surface under its footprint (bounding circles overlapping in plan), so it is set down, not dropped."""
    x, y = anchor[0] + obj.position[0], anchor[1] + obj.position[1]
    r = _radius(obj)
    under = [q[2] + _extent_z(o, orn)[1] for o, q, orn in rest if np.hypot(x - q[0], y - q[1]) < r + _radius(o)]
    return float(x), float(y), float(max(under, default=0.0) - _extent_z(obj, obj.orientation)[0] + obj.position[2])


class ClientOwner:
    """Owns one DIRECT PyBullet client (every call goes through it, so several coexist in a
    process). A context manager; reuse it across scenes."""

    def __init__(self) -> None:
        self.client = BulletClient(connection_mode=p.DIRECT)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client = None  # type: ignore[assignment]


class PhysicsWorld(ClientOwner):
    """The physics client: reset for every scene, holds only collision geometry."""

    def __init__(self, spec: PhysicsSpec) -> None:
        super().__init__()
        self.spec = spec

    def _create(self, obj: ObjectSample) -> int:
        c, a = self.client, assets.resolve(obj.asset)
        s = obj.scale
        if a.collision == "urdf":
            try:
                # No visual shapes: this client never draws, and parsing them was most of a duck's load (3.9 -> 0.7 ms)
                body = c.loadURDF(str(a.path), obj.position, obj.orientation, globalScaling=s, flags=p.URDF_IGNORE_VISUAL_SHAPES)
            except p.error:
                raise AssetError(f"PyBullet cannot load URDF `{a.path}`; check that its mesh files exist next to it.") from None
            c.resetBasePositionAndOrientation(body, *link_to_com(c, body, obj.position, obj.orientation))
            if obj.mass is not None:  # otherwise the URDF's own inertial mass
                c.changeDynamics(body, -1, mass=obj.mass)
            return body
        if a.collision == "box":
            shape = c.createCollisionShape(p.GEOM_BOX, halfExtents=list(a.half_extents * s))
        elif a.collision == "sphere":
            shape = c.createCollisionShape(p.GEOM_SPHERE, radius=0.5 * s)
        elif a.collision == "cylinder":
            shape = c.createCollisionShape(p.GEOM_CYLINDER, radius=0.5 * s, height=s)
        else:
            hull = a.collision_hull
            if hull is not None:  # one convex hull: from its vertices, not the whole OBJ parsed again for every body
                shape = c.createCollisionShape(p.GEOM_MESH, vertices=hull.tolist(), meshScale=[s, s, s])
            else:  # one hull per part: PyBullet builds them from the file
                shape = c.createCollisionShape(p.GEOM_MESH, fileName=str(a.path), meshScale=[s, s, s],
                                               collisionFramePosition=[-o * s for o in a.offset])  # bounding-box centre at the origin
            if shape < 0:
                raise AssetError(f"PyBullet cannot load mesh `{a.source or a.path}`; check that it is a valid "
                                 f"{'mesh' if a.source else 'OBJ'} file.")
        return c.createMultiBody(baseMass=body_mass(obj), baseCollisionShapeIndex=shape, basePosition=obj.position,
                                 baseOrientation=obj.orientation)

    def _add(self, obj: ObjectSample) -> int:
        c = self.client
        b = self._create(obj)
        c.changeDynamics(b, -1, lateralFriction=0.5, restitution=0.3, rollingFriction=2e-3, spinningFriction=2e-3,
                         linearDamping=0.05, angularDamping=0.2)
        c.resetBaseVelocity(b, obj.linear_velocity, obj.angular_velocity)
        return b

    def _settle(self, bodies: list[int], max_steps: int) -> tuple[int, bool]:
        """Step until every body has been quiet for ``quiet_checks`` checks in a row, or ``max_steps``: (steps, settled).

        A body calm for ``sleep_after`` checks in a row is put to sleep, so the tail of a settle pays only for the
        bodies still moving; one that is hit wakes up (Bullet's islands), and a sleeper reads as calm."""
        c, spec = self.client, self.spec
        # bound once: each attribute of a BulletClient is looked up and wrapped anew on every call (~1.5 us), and a
        # settle makes ~300 steps and a velocity call per body per check
        step, velocity = c.stepSimulation, c.getBaseVelocity
        steps, quiet = 0, 0
        calm_for = np.zeros(len(bodies), int)
        asleep = np.zeros(len(bodies), bool)
        while steps < max_steps:
            for _ in range(spec.check_every):
                step()
            steps += spec.check_every
            # one getBaseVelocity per body (both vectors), squared norms: the same test, a third of the calls
            v = np.array([velocity(b) for b in bodies], float).reshape(-1, 6) if bodies else np.zeros((0, 6))
            calm_each = ((np.einsum("ij,ij->i", v[:, :3], v[:, :3]) < spec.linear_threshold ** 2)
                         & (np.einsum("ij,ij->i", v[:, 3:], v[:, 3:]) < spec.angular_threshold ** 2))
            calm_for = np.where(calm_each, calm_for + 1, 0)
            if spec.sleep_after:
                for k in np.flatnonzero((calm_for >= spec.sleep_after) & ~asleep):
                    # multibodies ignore SLEEP unless sleeping is enabled first
                    c.changeDynamics(bodies[k], -1, activationState=p.ACTIVATION_STATE_ENABLE_SLEEPING)
                    c.changeDynamics(bodies[k], -1, activationState=p.ACTIVATION_STATE_SLEEP)
                    asleep[k] = True
                asleep &= calm_each  # woken and moving again: may be put to sleep again once calm
            quiet = quiet + 1 if bool(calm_each.all()) else 0
            if quiet >= spec.quiet_checks:
                return steps, True
        return steps, False

    def simulate(self, sample: SceneSample, region: tuple[float, float]) -> tuple[SceneState, list[int]]:
        """Drop, settle, and return the settled scene (objects that left the region are dropped)."""
        c, spec = self.client, self.spec
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=spec.timestep, deterministicOverlappingPairs=1, numSolverIterations=spec.solver_iterations)
        ground = c.createMultiBody(0, c.createCollisionShape(p.GEOM_PLANE))
        c.changeDynamics(ground, -1, lateralFriction=0.6, restitution=0.2)
        if sample.tray is not None:
            for half, centre, _ in tray_boxes(sample.tray):
                b = c.createMultiBody(0, c.createCollisionShape(p.GEOM_BOX, halfExtents=half), basePosition=centre)
                c.changeDynamics(b, -1, lateralFriction=0.6, restitution=0.3)
        # Occluders (``anchor`` set) drop onto their object once everything else has settled: they need its settled pose.
        # A scene without any simulates exactly as before they existed.
        bodies: list[int] = [-1] * len(sample.objects)
        first = [i for i, o in enumerate(sample.objects) if o.anchor is None]
        for i in first:
            bodies[i] = self._add(sample.objects[i])
        steps, settled = self._settle([bodies[i] for i in first], spec.max_steps)
        later = [i for i, o in enumerate(sample.objects) if o.anchor is not None]
        if later:
            rest = {i: (sample.objects[i], *(np.asarray(v) for v in com_to_link(c, bodies[i], *c.getBasePositionAndOrientation(bodies[i]))))
                    for i in first}
            for i in later:
                o = sample.objects[i]
                bodies[i] = self._add(replace(o, position=_onto(o, rest[o.anchor][1], list(rest.values()))))  # type: ignore[index]
                # lighter than what it lies on: a 100 g box set on a 4 g die would squirt the die away from under it
                c.changeDynamics(bodies[i], -1, mass=OCCLUDER_MASS * c.getDynamicsInfo(bodies[o.anchor], -1)[0])  # type: ignore[index]
            more, calm = self._settle(bodies, max(spec.max_steps - steps, spec.check_every * spec.quiet_checks))
            steps, settled = steps + more, settled and calm
        placed, dropped, kept_bodies = [], 0, []
        limit_x, limit_y = region[0] * 3 + 0.05, region[1] * 3 + 0.05
        for i, (obj, b) in enumerate(zip(sample.objects, bodies)):
            pos, orn = com_to_link(c, b, *c.getBasePositionAndOrientation(b))
            if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(orn))):
                # A solver explosion (e.g. deep initial interpenetration of a bad mesh): no label can be
                # trusted, so the whole scene is redrawn from a derived seed by the pipeline.
                raise SimulationError(f"physics blew up: object {i} ({obj.asset}) has a non-finite pose after {steps} steps; "
                                      "check the mesh (closed, sensible scale) or lower physics.timestep.")
            if pos[2] < -0.02 or abs(pos[0]) > limit_x or abs(pos[1]) > limit_y:
                dropped += 1  # fell off the table or out of the region: never labelled
                continue
            placed.append(PlacedObject(index=i, sample=obj, position=tuple(pos), orientation=tuple(orn), category=obj.category))  # type: ignore[arg-type]
            kept_bodies.append(b)
        state = SceneState(objects=tuple(placed), sim_steps=steps, settled=settled, n_dropped=dropped, tray=sample.tray,
                           ground_texture=sample.ground_texture, ground_rgba=sample.ground_rgba)
        return state, kept_bodies
