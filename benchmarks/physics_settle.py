"""What settling physics costs per scene, and what the PhysicsSpec knobs would buy, side by side in one
run (variants interleaved over repeats, because the machine is shared and noisy).

    python benchmarks/physics_settle.py [--scenes 80] [--repeats 2] [--scene dice]

Prints ms/scene, Bullet steps/scene and unsettled scenes per variant, each variant's time as a ratio of the
baseline (the shipped defaults), how far the settled poses moved, and the deepest contact left at rest (a label is
only valid without interpenetration). Variants change settled poses, so they change labels: this measures cost
only; sim-to-real utility decides whether a variant is acceptable.

Besides the PhysicsSpec knobs, two of issue 13's levers that simgen has no knob for are priced here, by a schedule
installed for the variant: larger steps first ("coarse 1/120 s for the first 0.1 s": the drop's free fall at twice
the step, then the shipped step; measured 2026-11-27 with "until every body is slow" too, where dice never came to
rest at 1/120 s), and objects dropped from nearer their resting height (scene.drop_height a quarter of the scene's).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

VARIANTS = {
    "baseline (defaults)": {},
    "sleep_after=0 (no sleeping)": {"sleep_after": 0},
    "solver_iterations=10": {"solver_iterations": 10},
    "quiet_checks=2": {"quiet_checks": 2},
    "timestep=1/180": {"timestep": 1 / 180},
    "coarse 1/120 s for 0.1 s": {"_coarse": (1 / 120, 0.1)},
    "coarse 1/120 s for 0.2 s": {"_coarse": (1 / 120, 0.2)},
    "drop_height x 0.25": {"_drop": 0.25},
}


def coarse_start(settle, dt: float, seconds: float):
    """PhysicsWorld._settle with Bullet stepping at ``dt`` for the first ``seconds`` of simulated time (the checks
    keep their cadence in simulated time), then at the spec's own step for the rest of the settle."""
    def wrapped(self, bodies, max_steps):
        c, fine = self.client, self.spec.timestep
        c.setPhysicsEngineParameter(fixedTimeStep=dt)
        for _ in range(int(round(seconds / dt))):
            c.stepSimulation()
        c.setPhysicsEngineParameter(fixedTimeStep=fine)
        spent = int(round(seconds / fine))  # in the spec's steps, which max_steps and sim_steps count
        steps, settled = settle(self, bodies, max(max_steps - spent, self.spec.check_every))
        return steps + spent, settled
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scene", default="dice")
    a = ap.parse_args()

    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    cfg = render_config(compose_dict("render", [f"scene={a.scene}", "out=/tmp/simgen-physics-bench", "workers=1", "progress=false"]))
    with quiet_stdout():
        gen = Generator(cfg)
    rows = {k: [0.0, 0, 0] for k in VARIANTS}  # seconds, steps, unsettled
    poses: dict[str, list] = {k: [] for k in VARIANTS}  # first repeat's settled poses, to price the label change
    from simgen.dists import Uniform
    from simgen.physics import PhysicsWorld

    shipped_settle = PhysicsWorld._settle
    deepest: dict[str, float] = {k: 0.0 for k in VARIANTS}  # metres: the most negative contact distance at rest
    for rep in range(a.repeats):
        for name, change in VARIANTS.items():
            knobs = {k: v for k, v in change.items() if not k.startswith("_")}
            gen.physics.spec = replace(cfg.physics, **knobs)
            PhysicsWorld._settle = coarse_start(shipped_settle, *change["_coarse"]) if "_coarse" in change else shipped_settle
            drop = cfg.scene.drop_height
            if "_drop" in change:
                drop = Uniform(drop.lo * change["_drop"], drop.hi * change["_drop"])  # type: ignore[attr-defined]
            gen.cfg = replace(cfg, scene=replace(cfg.scene, drop_height=drop))
            t = time.perf_counter()
            for i in range(a.scenes):
                gen._scene = None  # force sample + settle for every scene
                state, _ = gen.scene(i)
                rows[name][1] += state.sim_steps
                rows[name][2] += not state.settled
                if rep == 0:
                    poses[name].append([(o.position, o.orientation) for o in state.objects])
                    contacts = gen.physics.client.getContactPoints()  # the settled world is still in the client
                    deepest[name] = min([deepest[name], *(float(c[8]) for c in contacts)])
            rows[name][0] += time.perf_counter() - t
    PhysicsWorld._settle = shipped_settle
    gen.close()
    n = a.scenes * a.repeats
    base = rows["baseline (defaults)"][0]
    print(f"\n{a.scene}: {a.scenes} scenes x {a.repeats} repeats, sample + settle per scene, one process")
    print(f"{'variant':28} {'ms/scene':>9} {'steps/scene':>12} {'unsettled':>10} {'time vs baseline':>17} "
          f"{'moved vs baseline: p90 / max mm, max deg':>42} {'deepest contact at rest':>24}")
    for name, (sec, steps, uns) in rows.items():
        print(f"{name:28} {1e3 * sec / n:9.1f} {steps / n:12.1f} {uns:10d} {sec / base:17.2f} {_moved(poses['baseline (defaults)'], poses[name]):>42} "
              f"{1e3 * deepest[name]:21.2f} mm")


def _moved(base: list, other: list) -> str:
    """How far the same objects came to rest from where the baseline put them (scenes whose object count changed
    are counted apart: an object left the region in one of them)."""
    import numpy as np
    d, ang, changed = [], [], 0
    for a, b in zip(base, other):
        if len(a) != len(b):
            changed += 1
            continue
        for (pa, qa), (pb, qb) in zip(a, b):
            d.append(float(np.linalg.norm(np.subtract(pa, pb))))
            ang.append(float(np.degrees(2 * np.arccos(min(1.0, abs(float(np.dot(qa, qb))))))))
    if not d:
        return "-"
    return f"{1e3 * np.percentile(d, 90):.2f} / {1e3 * max(d):.1f} mm, {max(ang):.1f} deg" + (f", {changed} scenes differ" if changed else "")


if __name__ == "__main__":
    main()
