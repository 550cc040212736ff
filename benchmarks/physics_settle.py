"""What settling physics costs per scene, and what the PhysicsSpec knobs would buy, side by side in one
run (variants interleaved over repeats, because the machine is shared and noisy).

    python benchmarks/physics_settle.py [--scenes 80] [--repeats 2] [--scene dice]

Prints ms/scene, Bullet steps/scene and unsettled scenes per variant, and each variant's time as a
ratio of the baseline (the shipped defaults). Variants change settled poses, so they change labels:
this measures cost only; sim-to-real utility decides whether a variant is acceptable.
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
}


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
    for rep in range(a.repeats):
        for name, change in VARIANTS.items():
            gen.physics.spec = replace(cfg.physics, **change)
            t = time.perf_counter()
            for i in range(a.scenes):
                gen._scene = None  # force sample + settle for every scene
                state, _ = gen.scene(i)
                rows[name][1] += state.sim_steps
                rows[name][2] += not state.settled
                if rep == 0:
                    poses[name].append([(o.position, o.orientation) for o in state.objects])
            rows[name][0] += time.perf_counter() - t
    gen.close()
    n = a.scenes * a.repeats
    base = rows["baseline (defaults)"][0]
    print(f"\n{a.scene}: {a.scenes} scenes x {a.repeats} repeats, sample + settle per scene, one process")
    print(f"{'variant':28} {'ms/scene':>9} {'steps/scene':>12} {'unsettled':>10} {'time vs baseline':>17} "
          f"{'moved vs baseline: p90 / max mm, max deg':>42}")
    for name, (sec, steps, uns) in rows.items():
        print(f"{name:28} {1e3 * sec / n:9.1f} {steps / n:12.1f} {uns:10d} {sec / base:17.2f} {_moved(poses['baseline (defaults)'], poses[name]):>42}")


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
