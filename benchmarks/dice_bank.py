"""What the dice bank's size costs: images/s and peak memory of `simgen render` on dice with N looks, side by side.

    python benchmarks/dice_bank.py [--looks 48,192] [--n 200] [--repeats 2] [--renderer tiny] [--workers 1]

A larger bank covers more real looks (docs/sim2real.md, sixth round), but the render side pools one body per
(die scale bin, look), so a run meets more first uses (a body created, its texture loaded) and holds more bodies.
Each repeat renders the same --n images (same seed) once per bank size, interleaved (this machine is shared and
noisy), in a fresh process each, and reports whole-run images/s (start-up included), the manifest's per-image
render time, and the peak RSS of the run's processes. Ratios are against the first --looks value.

With --scenes N (> 0), each bank size also runs the memory loop of benchmarks/scale.py in a fresh process: one
generator, 64x64 TinyRenderer images so that scenes dominate, RSS and pooled bodies after 100, 500, 1000 ... N scenes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(looks: int, n: int, renderer: str, workers: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "simgen", "render", f"n_images={n}", "seed=0", f"renderer={renderer}", f"workers={workers}",
           f"scene.texture_banks.dice.count={looks}", "progress=false", f"out={out}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this run (and its workers, once they are reaped)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"simgen render failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    m = json.loads((out / "manifest.json").read_text())
    return {"img_s": n / wall, "render_ms": m["timings_ms"]["render_ms"], "rss_mb": usage.ru_maxrss / 1024}


def memory(looks: int, scenes: int) -> None:
    """scale.py's memory loop on dice with ``looks`` looks; prints RSS and pooled bodies at a few marks (run in its own
    process, so that each bank size starts from the same state)."""
    from scale import memory_marks  # puts tests/ on the path, for conftest

    from conftest import compose_dict
    from simgen.config import render_config

    cfg = render_config(compose_dict("render", [f"out={tempfile.mkdtemp(prefix='simgen-bank-mem-')}", "workers=1", "width=64",
                                                "height=64", "renderer=tiny", "progress=false",
                                                f"scene.texture_banks.dice.count={looks}"]))
    marks, _ = memory_marks(cfg, scenes, at=(100, 500, 1000, 2000, 5000))
    print(f"{looks} looks: " + ", ".join(f"after {k}: {m:.0f} MB, {b} bodies" for k, (m, b) in marks.items()) +
          f"; growth 100 -> {scenes}: {marks[scenes][0] - marks[100][0]:.1f} MB", flush=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        memory(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--looks", default="48,192", help="bank sizes to compare, the first is the baseline")
    ap.add_argument("--n", type=int, default=200, help="images per run")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--renderer", default="tiny", help="tiny, egl or auto")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scenes", type=int, default=0, help="also the memory loop over this many scenes (0: skip)")
    a = ap.parse_args()
    looks = [int(x) for x in a.looks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="simgen-bank-"))
    results: dict[int, list[dict]] = {k: [] for k in looks}
    try:
        for r in range(a.repeats):
            for k in looks:
                res = run(k, a.n, a.renderer, a.workers, work / f"bank{k}")
                results[k].append(res)
                print(f"repeat {r + 1}: {k} looks: {res['img_s']:.2f} img/s, render {res['render_ms']:.1f} ms/img, "
                      f"peak RSS {res['rss_mb']:.0f} MB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = looks[0]
    print(f"\ndice, {a.n} images, renderer={a.renderer}, workers={a.workers}, median of {a.repeats}:")
    print("| looks | img/s | vs first | render ms/img | peak RSS MB |")
    print("|---|---|---|---|---|")
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in results.items()}
    for k in looks:
        print(f"| {k} | {med[k]['img_s']:.2f} | {med[k]['img_s'] / med[base]['img_s']:.2f}x | {med[k]['render_ms']:.1f} | "
              f"{med[k]['rss_mb']:.0f} |")
    if a.scenes > 0:
        print(f"\nmemory of one generator over {a.scenes} scenes (tiny, 64x64):")
        for k in looks:
            subprocess.run([sys.executable, __file__, "--memory-child", str(k), str(a.scenes)], check=True)


if __name__ == "__main__":
    main()
