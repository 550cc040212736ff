"""Render speed, side by side in one run: PyBullet's bare getCameraImage on pre-settled scenes vs
simgen end to end on the same scenes: without physics (the same pre-settled scenes: staging, render, labels,
sensor model, JPEG + COCO files), with physics, and with 4 views per settled scene, for each renderer (tiny, egl, gl); the last
two again with a physics process settling the next scenes beside the renderer (physics_process=true).
One rendering process each, so the ratio is what simgen's own work costs.

    python benchmarks/render_speed.py [--n 30] [--width 640] [--height 480]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--scene", default="dice")
    ap.add_argument("--renderers", default=None, help="a subset of tiny,egl,gl (default: every one that runs here)")
    a = ap.parse_args()

    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.errors import RendererUnavailable
    from simgen.pipeline import Generator, image_seeds
    from simgen.render import probe_egl
    from simgen.run import quiet_stdout, render_dataset, render_each, spare_core
    from simgen.sample import sample_view
    import numpy as np
    from dataclasses import replace

    renderers = ["tiny"]
    try:
        print(f"EGL: {probe_egl()}")
        renderers.append("egl")
    except RendererUnavailable as e:
        print(f"EGL skipped: {e}")
    from simgen.glrender import probe_gl

    try:
        print(f"GL: {probe_gl()}")
        renderers.append("gl")
    except RendererUnavailable as e:
        print(f"GL skipped: {e}")
    if a.renderers:
        renderers = [r for r in renderers if r in a.renderers.split(",")]
    rows = []
    for r in renderers:
        with tempfile.TemporaryDirectory() as tmp:
            d = compose_dict("render", [f"scene={a.scene}", f"renderer={r}", f"n_images={a.n}", f"width={a.width}", f"height={a.height}",
                                        f"out={tmp}/ds", "workers=1", "progress=false"])
            cfg = render_config(d)
            with quiet_stdout():
                gen = Generator(cfg)
                settled = [gen.scene(i) for i in range(a.n)]
                scenes = [st for st, _ in settled]
                views = [sample_view(cfg.scene, cfg.randomization, a.width, a.height, np.random.default_rng(image_seeds(cfg.seed, i)[1]))
                         for i in range(a.n)]
                bare = []
                for rep in range(3):  # a warm-up pass, bare, end to end, bare again: the machine is shared and noisy
                    for st, v in zip(scenes, views):
                        gen.world.stage(st)
                        gen.world.frame(v.camera)  # the ground room follows the camera
                        t = time.perf_counter()
                        gen.renderer.raw(gen.world, v.camera, v.light)
                        if rep:  # the first pass loads and uploads every pooled body's mesh and texture (untimed)
                            bare.append(time.perf_counter() - t)
                    if rep == 1:
                        cat_ids = {c: k + 1 for k, c in enumerate(cfg.scene.categories)}

                        overlap = spare_core(1)  # what `simgen render workers=1` does here

                        def end_to_end(views_per_scene: int) -> float:
                            """Seconds for n images: sample, physics, render, labels, sensor, JPEG + label files,
                            through simgen's own render loop (writing on a thread where a core is free)."""
                            gen.cfg, gen._scene = replace(cfg, views_per_scene=views_per_scene), None
                            t = time.perf_counter()
                            for _ in render_each(gen, gen.cfg, list(range(a.n)), cat_ids, overlap=overlap):
                                pass
                            gen.cfg, gen._scene = cfg, None
                            return time.perf_counter() - t

                        def presettled(overlap: bool) -> float:
                            """Seconds for n images from the same pre-settled scenes: everything but physics."""
                            gen.scene = lambda i: settled[i]  # type: ignore[method-assign]  # the scenes settled above
                            t = time.perf_counter()
                            for _ in render_each(gen, cfg, list(range(a.n)), cat_ids, overlap=overlap):
                                pass
                            del gen.scene
                            return time.perf_counter() - t

                        inline = presettled(False)
                        pre = presettled(overlap)
                        e2e = end_to_end(1)  # a fresh scene per image
                        # physics amortized over 4 camera/light draws of each settled scene (its scenes
                        # are a subset of the ones above, so the render pool is warm)
                        e2e4 = end_to_end(4)
                        # the same two with a physics process settling the next scenes beside this one (physics_process;
                        # `auto` starts one for workers=1 on 2+ cores), made ready first so its start-up is not timed
                        from simgen.feeder import PhysicsFeeder

                        gen.feeder = PhysicsFeeder(cfg, gen.banks)
                        gen.feeder.hello.result()
                        e2e_pp, e2e4_pp = end_to_end(1), end_to_end(4)
                        gen.feeder.close()
                        gen.feeder = None
                gen.close()
            bare_rate = len(bare) / sum(bare)
            e2e_rate = a.n / e2e
            # the CLI as users run it, start-up included (plugin probe, texture banks, pool warm-up)
            t = time.perf_counter()
            render_dataset(replace(cfg, out=Path(tmp) / "cli"), log=lambda m: None)
            cli_rate = a.n / (time.perf_counter() - t)
            rows.append((r, bare_rate, a.n / pre, a.n / pre / bare_rate, e2e_rate, e2e_rate / bare_rate, a.n / e2e4,
                         a.n / e2e4 / bare_rate, cli_rate, a.n / inline / bare_rate, a.n / e2e_pp / bare_rate, a.n / e2e4_pp / bare_rate))
    print(f"\n{a.scene}, {a.width}x{a.height}, {a.n} images, 1 process (img/s, and ratio to the bare renderer call); "
          f"writing {'on a thread (a core is free)' if spare_core(1) else 'inline (no free core)'}")
    print(f"{'renderer':8} {'bare':>7} {'pre-settled':>12} {'ratio':>6} {'with physics':>13} {'ratio':>6} {'4 views/scene':>14} "
          f"{'ratio':>6} {'render_dataset incl. start-up':>30} {'pre-settled, writing inline: ratio':>35} "
          f"{'physics process: ratio, 1 view':>31} {'4 views':>8}")
    for r, b, p_, qp, e, q, e4, q4, c, qi, qpp, q4pp in rows:
        print(f"{r:8} {b:7.2f} {p_:12.2f} {qp:6.2f} {e:13.2f} {q:6.2f} {e4:14.2f} {q4:6.2f} {c:30.2f} {qi:35.2f} {qpp:31.2f} {q4pp:8.2f}")
    print("targets (issue 13): pre-settled end to end >= 0.8x the bare call; 4 views/scene (physics amortised) >= 0.95x")


if __name__ == "__main__":
    main()
