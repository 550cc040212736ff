"""OpenCV's threads when every core renders: the sensor model and image encoding of many processes at once, each
process with OpenCV's default pool (one thread per core) against its share of the cores (what render workers get,
``simgen.render.share_cv_threads``), interleaved in one run.

    python benchmarks/cv_threads.py                       # as many processes as usable cores
    python benchmarks/cv_threads.py --processes 24 --n 300  # a 16-core GPU machine's sweep: 24 workers

Each process applies the dice scene's sensor model (its own randomized draws: colour, blurs, vignette, noise) to a
640x480 image and encodes it as JPEG, ``--n`` times; the script prints the images/s of all processes together and the
CPU an image (all threads of all processes). The pixels are the same either way (a test checks the render's files).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def work(args: tuple[int, int, int | None, object, object]) -> None:
    seed, n, threads, go, out = args
    import cv2
    import numpy as np
    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.sample import sample_view
    from simgen.sensor import apply_sensor, warm
    from simgen.writers.coco import encode_image

    if threads is not None:
        cv2.setNumThreads(threads)
    cfg = render_config(compose_dict("render", ["scene=dice", "out=unused"]))
    views = [sample_view(cfg.scene, cfg.randomization, 640, 480, np.random.default_rng([seed, i])) for i in range(n)]
    img = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2)
    warm()
    go.wait()  # every process starts timing together
    cpu, t0 = time.process_time(), time.time()  # process time: every thread of this process, OpenCV's pool included
    for i, v in enumerate(views):
        encode_image(apply_sensor(img, v.sensor, np.random.default_rng([seed, i, 1])), "jpg", v.sensor.jpeg_quality)
    out.put((time.process_time() - cpu, t0, time.time()))  # the loop alone: not the process's start or exit


def run(processes: int, n: int, threads: int | None) -> tuple[float, float]:
    """(images/s of all processes, CPU-ms an image over every process's threads) with ``threads`` OpenCV threads each
    (None: OpenCV's default)."""
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    go, out = manager.Event(), manager.Queue()
    procs = [ctx.Process(target=work, args=((k, n, threads, go, out),)) for k in range(processes)]
    for p in procs:
        p.start()
    time.sleep(3.0 + 0.3 * processes)  # imports and setup, untimed
    go.set()
    for p in procs:
        p.join()
    got = [out.get() for _ in procs]
    manager.shutdown()
    cpu = sum(g[0] for g in got)
    wall = max(g[2] for g in got) - min(g[1] for g in got)  # first loop's start to last loop's end
    return processes * n / wall, 1e3 * cpu / (processes * n)


def main() -> None:
    from simgen.train.threads import usable_cores

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=usable_cores())
    ap.add_argument("--n", type=int, default=200, help="images a process")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    share = max(1, usable_cores() // a.processes)
    arms = {"OpenCV's default pool": None, f"a share of the cores ({share})": share}
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in arms}
    for rep in range(a.repeats):
        for name in (list(arms) if rep % 2 == 0 else list(arms)[::-1]):
            res[name].append(run(a.processes, a.n, arms[name]))
            print(f"  #{rep + 1} {name}: {res[name][-1][0]:.1f} img/s", file=sys.stderr, flush=True)
    print(f"\n{a.processes} processes on {usable_cores()} cores, sensor model + JPEG at 640x480, {a.n} images each, "
          f"median of {a.repeats}")
    base = statistics.median(r[0] for r in res["OpenCV's default pool"])
    for name, r in res.items():
        rate, cpu = statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)
        print(f"{name:32} {rate:8.1f} img/s ({rate / base:.2f}x)   {cpu:6.2f} CPU-ms an image")


if __name__ == "__main__":
    main()
