"""Can every shipped scene be drawn for any image index? Sweeps each scene over many indices with the
pipeline's own redraw rule (a failed draw is redrawn from [seed, i, attempt], at most
physics.placement_retries times) and counts first-draw failures, redraws and scenes that stay unplaceable.

    python benchmarks/scene_sweep.py [--n 10000] [--seeds 0 1] [--physics 0] [--scenes dice custom] [override ...]
    python benchmarks/scene_sweep.py scene.cluster.probability=1 scene.tray.wall_bias=1 --n 500 --scenes dice

Placement is pure numpy (about a millisecond a scene), so 10,000 indices per scene take seconds.
`--physics N` also settles the first N scenes of each sweep in PyBullet and counts physics blow-ups.
Exits 1 if any index of any scene cannot be drawn: that would end a render at that image.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--physics", type=int, default=0, help="also settle this many scenes per sweep in PyBullet")
    ap.add_argument("--scenes", nargs="+", default=None, help="only these scenes (default: every shipped one)")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every swept scene, e.g. scene.cluster.probability=1")
    a = ap.parse_args()

    from conftest import compose_dict
    from tqdm import tqdm

    from simgen.cli import group_options
    from simgen.config import render_config
    from simgen.errors import SceneError
    from simgen.physics import PhysicsWorld
    from simgen.pipeline import draw_scene, texture_banks
    from simgen.run import quiet_stdout

    bad = 0
    print(f"{'scene':10} {'seed':>4} {'indices':>8} {'first-draw fail':>16} {'redraws':>8} {'max attempts':>12} "
          f"{'unplaceable':>11} {'blow-ups':>8} {'ms/scene':>8}")
    for scene in a.scenes or group_options("scene"):
        for seed in a.seeds:
            cfg = render_config(compose_dict("render", [f"scene={scene}", f"seed={seed}", f"n_images={a.n}", "out=/tmp/unused", *a.overrides]))
            banks = {k: tuple(sorted(v)) for k, v in texture_banks(cfg).items()}
            redraws, failed, worst, first_fail = Counter(), 0, 0, 0
            t0 = time.perf_counter()
            for i in tqdm(range(a.n), desc=f"{scene} seed {seed}", leave=False, disable=None):
                try:
                    _, _, reasons = draw_scene(cfg, banks, i)
                except SceneError:
                    failed += 1
                    continue
                first_fail += bool(reasons)
                redraws.update(reasons)
                worst = max(worst, len(reasons) + 1)
            ms = 1e3 * (time.perf_counter() - t0) / a.n
            blowups = 0
            if a.physics:
                with quiet_stdout():
                    world = PhysicsWorld(cfg.physics)
                for i in range(a.physics):
                    try:
                        draw_scene(cfg, banks, i, lambda s: world.simulate(s, cfg.scene.area)[0])
                    except SceneError:
                        blowups += 1
                world.close()
            bad += failed + blowups
            print(f"{scene:10} {seed:>4} {a.n:>8} {first_fail / a.n:>15.3%} {sum(redraws.values()):>8} {worst:>12} "
                  f"{failed:>11} {blowups if a.physics else '-':>8} {ms:>8.2f}")
    print("OK: every index of every scene can be drawn" if not bad else f"FAIL: {bad} indices cannot be drawn")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
