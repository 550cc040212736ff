"""What the targeted-generation knobs (docs/targeted.md) do to settled scenes, measured in PyBullet without
rendering: top-face histogram of the dice, share of labelled objects touching another one or a tray wall,
nearest-neighbour distance between labelled objects (centre to centre, in object sizes: 1 is two flat dice side
by side), objects per scene and redraws. Touching: closer than 1 mm (pybullet getClosestPoints).

    python benchmarks/targeted_stats.py [--scene dice] [--n 100] [--seed 0] [override ...]
    python benchmarks/targeted_stats.py --n 60 scene.face_balance.probability=1
    python benchmarks/targeted_stats.py --n 60 scene.cluster.probability=1 scene.tray.probability=1 scene.tray.wall_bias=0.5
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


TOUCH = 1e-3  # metres: closer than this counts as touching (about 2 px in a 640x640 dice image)


def contacts(client, bodies: list[int], walls: set[int]) -> tuple[int, int]:
    """(labelled objects touching another labelled object, labelled objects touching a tray wall)."""
    def near(b: int, other: int) -> bool:
        return bool(client.getClosestPoints(b, other, TOUCH))

    touch = sum(any(near(b, o) for o in bodies if o != b) for b in bodies)
    wall = sum(any(near(b, w) for w in walls) for b in bodies)
    return touch, wall


def nearest_neighbour(xy: np.ndarray) -> list[float]:
    """Each point's distance to its nearest other point (none for a lone point)."""
    if len(xy) < 2:
        return []
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1).tolist()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="dice")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()

    from conftest import compose_dict

    from simgen import assets
    from simgen.config import render_config
    from simgen.physics import PhysicsWorld
    from simgen.pipeline import draw_scene, texture_banks
    from simgen.run import quiet_stdout
    from simgen.scenes_api import labeler

    cfg = render_config(compose_dict("render", [f"scene={a.scene}", f"seed={a.seed}", "out=/tmp/unused", *a.overrides]))
    banks = {k: tuple(sorted(v)) for k, v in texture_banks(cfg).items()}
    label = labeler(cfg.scene.labeler)
    with quiet_stdout():
        world = PhysicsWorld(cfg.physics)
    cats, nn, redraws = Counter(), [], 0
    n_obj = touching = at_wall = in_tray = 0
    for i in range(a.n):
        kept: list[int] = []

        def settle(sample, kept=kept):
            state, bodies = world.simulate(sample, cfg.scene.area)
            kept[:] = bodies
            return state

        _, state, reasons = draw_scene(cfg, banks, i, settle)
        redraws += len(reasons)
        lab = [(o, b) for o, b in zip(state.objects, kept) if o.category is not None]
        walls = set(range(1, 5)) if state.tray is not None else set()  # bodies 1-4: the tray walls (physics.simulate)
        t, w = contacts(world.client, [b for _, b in lab], walls)
        touching, n_obj = touching + t, n_obj + len(lab)
        if state.tray is not None:
            at_wall, in_tray = at_wall + w, in_tray + len(lab)
        cats.update(label(o) for o, _ in lab)
        size = [2 * assets.resolve(o.sample.asset).half_extents.max() * o.sample.scale for o, _ in lab]
        nn += [d / sz for d, sz in zip(nearest_neighbour(np.array([o.position[:2] for o, _ in lab])), size)]
    world.close()
    total = sum(cats.values())
    print(f"{a.scene} {' '.join(a.overrides) or '(defaults)'}: {a.n} scenes, {n_obj} labelled objects ({n_obj / a.n:.1f}/scene), "
          f"{redraws} redraws")
    print("categories: " + ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in sorted(cats.items())))
    print(f"touching another: {100 * touching / max(n_obj, 1):.1f}%   against a tray wall: "
          f"{100 * at_wall / max(in_tray, 1):.1f}% of {in_tray} in trays   "
          f"nearest neighbour: mean {np.mean(nn):.2f}, median {np.median(nn):.2f} object sizes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
