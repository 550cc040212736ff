"""The CPU side of an image on the GPU path, measured here: what one render worker's own thread spends on an image
besides the frame itself (physics shared by the views of a scene, staging and issuing the draw, reading the frame back,
labels, sensor model, image and label files), by stage, against what issue 13's GPU target allows.

    python benchmarks/cpu_side.py                                   # dice and tabletop, 640x480, 16 views a scene
    python benchmarks/cpu_side.py --scene dice --n 160 --repeats 5
    python benchmarks/cpu_side.py --compare /tmp/old                # another checkout's simgen, interleaved in the same run

Why this number: at R images/s on C cores every image may cost at most C / R seconds of CPU in all (1,000 img/s on 16
cores: 16 ms). On a GPU machine the frame is drawn on the GPU; what stays on the CPU is what this script times, one
worker thread's CPU time (``time.thread_time``) per stage, with images written inline as the whole-machine default
does. Here the frame is drawn by Mesa's llvmpipe: its raster threads are not counted, but its vertex work runs inside
the submit on this thread, so ``submit`` here is an upper bound of what a GPU driver costs. Ratios between the two
checkouts of one run are what to read: the machine is shared and its speed drifts.
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("physics", "stage", "submit", "readback", "labels", "sensor", "files")


def measure(scene: str, n: int, views: int, width: int, height: int) -> dict:
    """Per-image main-thread CPU (ms) by stage and in all, for ``n`` images after a warm-up of two scenes."""
    import simgen

    sys.path.insert(0, str(Path(simgen.__file__).resolve().parents[1] / "tests"))
    from conftest import compose_dict

    from simgen import pipeline, run
    from simgen.config import render_config
    from simgen.writers import coco

    import cv2

    # A worker of a machine whose cores all render (16-24 workers on 16 cores) has one OpenCV thread
    # (simgen.render.share_cv_threads), so its whole sensor model runs on the thread timed here. With OpenCV's default
    # pool (a thread per core) part of that work ran on pool threads this script did not count.
    cv_threads = cv2.getNumThreads()  # put back at the end: a caller in this process (a test) keeps its own
    cv2.setNumThreads(1)
    spent: collections.Counter = collections.Counter()
    originals: list[tuple[object, str, object]] = []

    def timed(owner, name: str, key: str) -> None:
        f = getattr(owner, name)
        originals.append((owner, name, vars(owner).get(name)))  # None: inherited, so deleting restores it

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            t = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[key] += time.thread_time() - t
        setattr(owner, name, wrapper)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = render_config(compose_dict("render", [f"scene={scene}", "renderer=gl", f"n_images={2 * views + n}",
                                                    f"width={width}", f"height={height}", f"out={tmp}/ds", "workers=1",
                                                    "progress=false", f"views_per_scene={views}"]))
        with run.quiet_stdout((1, 2)):
            gen = pipeline.Generator(cfg)
        try:
            for owner, name, key in ((pipeline, "settled_scene", "physics"), (type(gen.world), "stage", "stage"),
                                     (type(gen.renderer), "submit", "submit"), (pipeline.Generator, "done", "readback"),
                                     (pipeline, "annotate", "labels"), (pipeline, "apply_sensor", "sensor"),
                                     (coco, "write_record", "files")):
                timed(owner, name, key)
            cat_ids = {c: k + 1 for k, c in enumerate(cfg.scene.categories)}
            with run.quiet_stdout():
                for _ in run.render_each(gen, cfg, list(range(2 * views)), cat_ids, overlap=False):  # warm: pool, textures
                    pass
            spent.clear()
            t, p, w = time.thread_time(), time.process_time(), time.perf_counter()
            with run.quiet_stdout():
                for _ in run.render_each(gen, cfg, list(range(2 * views, 2 * views + n)), cat_ids, overlap=False):
                    pass
            t, p, w = time.thread_time() - t, time.process_time() - p, time.perf_counter() - w
        finally:
            for owner, name, f in reversed(originals):  # a caller in this process (a test) gets simgen back as it was
                if f is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, f)
            with run.quiet_stdout((1, 2)):
                gen.close()
            cv2.setNumThreads(cv_threads)
    ms = {k: 1e3 * spent[k] / n for k in STAGES}
    ms["other"] = 1e3 * t / n - sum(ms.values())
    return {"stages": ms, "thread": 1e3 * t / n, "process": 1e3 * p / n, "wall": 1e3 * w / n}


def child(checkout: Path | None, a: argparse.Namespace, scene: str) -> dict:
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())  # its simgen shadows the installed one
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--scene", scene, "--n", str(a.n), "--views",
           str(a.views), "--width", str(a.width), "--height", str(a.height)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode:
        sys.exit(f"cpu_side: the measurement failed ({checkout or 'this checkout'}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="dice,tabletop")
    ap.add_argument("--n", type=int, default=96, help="images timed per measurement (after two warm-up scenes)")
    ap.add_argument("--views", type=int, default=16, help="views_per_scene (the GPU sweep's best: 16)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--repeats", type=int, default=3, help="measurements per checkout, interleaved; medians reported")
    ap.add_argument("--compare", type=Path, default=None, metavar="CHECKOUT", help="another checkout, e.g. a git worktree")
    ap.add_argument("--cores", type=int, default=16, help="cores of the GPU machine in the target")
    ap.add_argument("--target", type=float, default=1000.0, help="images/s of the target")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.scene, a.n, a.views, a.width, a.height)))
        return

    budget = 1e3 * a.cores / a.target
    arms: dict[str, Path | None] = {"this checkout": None}
    if a.compare:
        arms[a.compare.name] = a.compare
    for scene in a.scene.split(","):
        runs: dict[str, list[dict]] = {k: [] for k in arms}
        for rep in range(a.repeats):
            for name in (list(arms) if rep % 2 == 0 else list(arms)[::-1]):  # alternate which goes first
                runs[name].append(child(arms[name], a, scene))
                print(f"  {scene} {name} #{rep + 1}: {runs[name][-1]['thread']:.2f} CPU-ms an image", file=sys.stderr, flush=True)
        print(f"\n{scene}, {a.width}x{a.height}, {a.views} views a scene, {a.n} images a measurement, median of {a.repeats}: "
              f"one worker thread's CPU-ms an image")
        print(f"{'stage':10}" + "".join(f"{name:>16}" for name in arms))
        med = {name: {k: statistics.median(r["stages"][k] for r in runs[name]) for k in (*STAGES, "other")} for name in arms}
        for k in (*STAGES, "other"):
            print(f"{k:10}" + "".join(f"{med[name][k]:16.2f}" for name in arms))
        total = {name: statistics.median(r["thread"] for r in runs[name]) for name in arms}
        print(f"{'total':10}" + "".join(f"{total[name]:16.2f}" for name in arms))
        print(f"{'(process)':10}" + "".join(f"{statistics.median(r['process'] for r in runs[name]):16.2f}" for name in arms)
              + "   (with llvmpipe's raster threads: not the GPU path's cost)")
        mine = total["this checkout"]
        print(f"target: {a.target:.0f} img/s on {a.cores} cores allows {budget:.1f} CPU-ms an image; this checkout's CPU side "
              f"here is {mine:.2f} ms ({mine / budget:.2f} of it; a worker makes at most {1e3 / mine:.0f} img/s on a core "
              f"like this one's)")
        if a.compare:
            old = total[a.compare.name]
            print(f"this checkout vs {a.compare.name}: {mine / old:.2f}x the CPU an image (per repeat: "
                  + ", ".join(f"{x['thread'] / y['thread']:.2f}" for x, y in zip(runs['this checkout'], runs[a.compare.name])) + ")")


if __name__ == "__main__":
    main()
