"""The GL renderer's shadow map: a fixed 2048 texels a side against :func:`simgen.glrender.shadow_size` (1024 at
640x480), on the same pre-settled views, interleaved in one run: the CPU a frame costs (this process's every thread,
llvmpipe's raster threads included: on a GPU the difference is small) and how far the pixels move.

    python benchmarks/shadow_map.py [--scene dice,tabletop] [--n 30] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="dice,tabletop")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import numpy as np
    from conftest import compose_dict

    import simgen.glrender as G
    from simgen.config import render_config
    from simgen.pipeline import Generator, image_seeds
    from simgen.run import quiet_stdout
    from simgen.sample import sample_view

    default = G.shadow_size
    for scene in a.scene.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = render_config(compose_dict("render", [f"scene={scene}", "renderer=gl", f"n_images={a.n}", f"out={tmp}/ds",
                                                        f"width={a.width}", f"height={a.height}", "workers=1", "progress=false"]))
            with quiet_stdout():
                gen = Generator(cfg)
                settled = [gen.scene(i)[0] for i in range(a.n)]
                views = [sample_view(cfg.scene, cfg.randomization, a.width, a.height,
                                     np.random.default_rng(image_seeds(cfg.seed, i)[1])) for i in range(a.n)]
                arms = {"2048": lambda w, h: 2048, f"shadow_size ({default(a.width, a.height)})": default}

                def run(size_of):
                    G.shadow_size = size_of
                    frames, t = [], time.process_time()
                    for st, v in zip(settled, views):
                        gen.world.stage(st)
                        frames.append(gen.renderer.render(gen.world, v.camera, v.light, depth=False))
                    return frames, 1e3 * (time.process_time() - t) / a.n

                for f in arms.values():  # warm: meshes, textures, both maps
                    run(f)
                cpu: dict[str, list[float]] = {k: [] for k in arms}
                drawn = {}
                for rep in range(a.repeats):
                    for name in (list(arms) if rep % 2 == 0 else list(arms)[::-1]):
                        drawn[name], ms = run(arms[name])
                        cpu[name].append(ms)
                G.shadow_size = default
                gen.close()
            big, small = drawn.values()
            d = [np.abs(x.rgb.astype(int) - y.rgb.astype(int)).max(axis=2) for x, y in zip(big, small)]
            shadowed = sum(bool(v.light.shadow) for v in views)
            (n1, c1), (n2, c2) = ((k, statistics.median(v)) for k, v in cpu.items())
            print(f"{scene}, {a.width}x{a.height}, {a.n} views ({shadowed} with shadows), median of {a.repeats}: CPU-ms a frame "
                  f"{n1} {c1:.2f}, {n2} {c2:.2f} ({c2 / c1:.2f}x)")
            print(f"  instance maps identical: {all(np.array_equal(x.instance, y.instance) for x, y in zip(big, small))}; "
                  f"pixels that differ: {np.mean([(x > 0).mean() for x in d]):.4f}, by more than 8 levels: "
                  f"{np.mean([(x > 8).mean() for x in d]):.5f}, mean |difference| {np.mean([x.mean() for x in d]):.4f} levels")


if __name__ == "__main__":
    main()
