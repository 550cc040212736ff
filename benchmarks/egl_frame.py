"""What one bare PyBullet frame costs, option by option, on simgen's own pre-settled scenes (one process).

    python benchmarks/egl_frame.py [--scene tabletop] [--n 20] [--renderer egl]

simgen asks every frame for colour, depth and the instance map, with shadows. PyBullet's EGL plugin draws a shadow
pass, the colour pass and a second pass for the instance map, reads each back with glReadPixels and flips and copies
every pixel on the CPU; this prints the median milliseconds of each variant side by side, so the docs can say which
part of a frame is the GPU's and which the CPU's (issue 13's GPU budget: at 1,000 img/s on 16 cores, 16 ms of CPU a
frame, everything included).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="tabletop")
    ap.add_argument("--n", type=int, default=20, help="pre-settled scenes; each variant draws each once, twice over")
    ap.add_argument("--renderer", default="egl")
    a = ap.parse_args()

    import numpy as np
    import pybullet as p
    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.pipeline import Generator, image_seeds
    from simgen.render import shadow_distance
    from simgen.run import quiet_stdout
    from simgen.sample import sample_view

    with tempfile.TemporaryDirectory() as tmp:
        cfg = render_config(compose_dict("render", [f"scene={a.scene}", f"renderer={a.renderer}", f"n_images={a.n}", "width=640",
                                                    "height=480", f"out={tmp}/ds", "workers=1", "progress=false"]))
        with quiet_stdout():
            gen = Generator(cfg)
            scenes = [gen.scene(i)[0] for i in range(a.n)]
        views = [sample_view(cfg.scene, cfg.randomization, 640, 480, np.random.default_rng(image_seeds(cfg.seed, i)[1]))
                 for i in range(a.n)]
        world = gen.world
        seg = p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX
        variants = {  # name: (size, shadow, flags)
            "simgen's frame: 640x480, shadow, instance map": ((640, 480), True, seg),
            "no shadow": ((640, 480), False, seg),
            "no instance map (ER_NO_SEGMENTATION_MASK)": ((640, 480), True, p.ER_NO_SEGMENTATION_MASK),
            "neither": ((640, 480), False, p.ER_NO_SEGMENTATION_MASK),
            "320x240, shadow, instance map": ((320, 240), True, seg),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(2):  # interleaved, twice: the machine may be shared
            for st, v in zip(scenes, views):
                world.stage(st)
                cam, lt = v.camera, v.light
                dist = shadow_distance(cam, world.frame(cam))  # the ground room follows the camera
                for name, ((w, h), shadow, flags) in variants.items():
                    k = w / cam.width  # the same view at another size
                    c = replace(cam, width=w, height=h, fx=cam.fx * k, fy=cam.fy * k, cx=cam.cx * k, cy=cam.cy * k)
                    t = time.perf_counter()
                    gen.renderer.raw(world, c, replace(lt, shadow=shadow), dist, flags=flags)  # simgen's call, buffers to numpy included
                    times[name].append(time.perf_counter() - t)
        gen.close()
    print(f"{a.scene}, renderer={a.renderer} ({getattr(gen.renderer, 'vendor', '') or 'TinyRenderer'}), {a.n} pre-settled scenes, "
          "median ms per getCameraImage call")
    base = float(np.median(times[next(iter(variants))]))
    for name, ts in times.items():
        m = 1e3 * float(np.median(ts))
        print(f"  {name:48s} {m:7.2f} ms  ({m / (1e3 * base):.2f}x)")
    print("  (each call includes turning PyBullet's buffers into numpy arrays: 0.01-0.02 ms, measured 2026-11-26)")


if __name__ == "__main__":
    main()
