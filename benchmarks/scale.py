"""Scale-out numbers, measured side by side in one run:
  - images/s with workers=1 vs workers=2, for tiny and egl (ratio; target >= 1.8x on 2 cores)
  - images/s with views_per_scene=1 vs 4
  - RSS of one worker after 100 and after N scenes (target growth <= 50 MB)
  - RenderedDataset throughput with 0, 1, 2 DataLoader workers next to reading the same images from disk, and
    whether it keeps up with training fcos_lite (views_per_scene=1 and 4)

    python benchmarks/scale.py [--n 96] [--scenes 5000] [--width 640] [--height 480]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20


def memory_marks(cfg, scenes: int, at: tuple[int, ...] = (100, 1000)) -> tuple[dict[int, tuple[float, int]], float]:
    """One generator over ``scenes`` scenes: {scenes so far: (RSS MB, pooled bodies)} after each of ``at`` and after
    the last, and the loop's seconds (the generator's start-up left out). Also used by dice_bank.py."""
    from simgen.pipeline import Generator
    from simgen.run import quiet_stdout

    marks = {}
    with quiet_stdout():
        gen = Generator(cfg)
        t = time.perf_counter()
        for i in range(scenes):
            gen.generate(i)
            if i + 1 in (*at, scenes):
                marks[i + 1] = (rss_mb(), gen.world.n_bodies)
        seconds = time.perf_counter() - t
        gen.close()
    return marks, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=96, help="images per throughput measurement")
    ap.add_argument("--train-steps", type=int, default=30, help="fcos_lite steps for the keep-up check")
    ap.add_argument("--scenes", type=int, default=5000, help="scenes for the memory measurement")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    a = ap.parse_args()

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: torch threads never spin on a shared machine
    import torch
    from conftest import compose_dict

    from simgen.config import render_config
    from simgen.data import CocoDataset, RenderedDataset, collate
    from simgen.errors import RendererUnavailable
    from simgen.pipeline import Generator
    from simgen.render import probe_egl
    from simgen.run import quiet_stdout, render_dataset

    tmp = Path(tempfile.mkdtemp(prefix="simgen-bench-"))

    def cfg(*over: str, name: str, n: int = a.n):
        return render_config(compose_dict("render", [f"n_images={n}", f"width={a.width}", f"height={a.height}", "progress=false",
                                                     f"out={tmp / name}", *over]))

    def seconds(c) -> float:
        t = time.perf_counter()
        render_dataset(c, log=lambda m: None)
        return time.perf_counter() - t

    def rate(c) -> float:
        return c.n_images / seconds(c)

    def steady(*over: str, name: str) -> tuple[float, float]:
        """(rate incl. start-up for n images, steady rate): n more images cost t(2n) - t(n), start-up cancels."""
        t1 = seconds(cfg(*over, name=name + "-n"))
        t2 = seconds(cfg(*over, name=name + "-2n", n=2 * a.n))
        return a.n / t1, a.n / max(t2 - t1, 1e-9)

    renderers = ["tiny"]
    try:
        probe_egl()
        renderers.append("egl")
    except RendererUnavailable as e:
        print(f"EGL skipped: {e}")
    from simgen.glrender import probe_gl

    try:
        probe_gl()
        renderers.append("gl")
    except RendererUnavailable as e:
        print(f"GL skipped: {e}")
    print(f"\n== workers (dice {a.width}x{a.height}; {a.n} images incl. start-up, and steady state from {a.n} vs {2 * a.n} images)")
    for r in renderers:
        one, one_s = steady(f"renderer={r}", "workers=1", name=f"{r}-w1")
        two, two_s = steady(f"renderer={r}", "workers=2", name=f"{r}-w2")
        print(f"{r:5} incl. start-up: workers=1 {one:6.2f} img/s  workers=2 {two:6.2f} img/s  ratio {two / one:.2f} | "
              f"steady: {one_s:6.2f} vs {two_s:6.2f} img/s  ratio {two_s / one_s:.2f} (target >= 1.8)")

    print(f"\n== views per scene (renderer=auto, workers=1, {a.n} images)")
    v1 = rate(cfg("views_per_scene=1", "workers=1", name="v1"))
    v4 = rate(cfg("views_per_scene=4", "workers=1", name="v4"))
    print(f"views_per_scene=1 {v1:6.2f} img/s   views_per_scene=4 {v4:6.2f} img/s   ratio {v4 / v1:.2f}")

    for r in renderers:
        print(f"\n== memory of one worker (renderer={r}, 64x64 images so that scenes dominate, {a.scenes} scenes)")
        c = cfg("workers=1", "width=64", "height=64", f"renderer={r}", name=f"mem-{r}")
        base = rss_mb()  # this process before the generator: Python, torch, numpy already imported
        marks, seconds = memory_marks(c, a.scenes)
        print(f"before this generator: RSS {base:7.1f} MB (imports and the renders above)")
        for k, (m, b) in marks.items():
            print(f"after {k:5d} scenes: RSS {m:7.1f} MB, pooled bodies {b}")
        print(f"growth 100 -> {a.scenes}: {marks[a.scenes][0] - marks[100][0]:.1f} MB (target <= 50 MB); "
              f"{a.scenes / seconds:.1f} scenes/s")

    print(f"\n== RenderedDataset vs disk ({a.n} images, batch 4)")
    disk_cfg = cfg("workers=2", "image_format=png", name="disk")
    render_dataset(disk_cfg, log=lambda m: None)

    def loader_rate(ds, workers: int) -> tuple[float, float]:
        """(rate incl. worker start-up, steady rate after each worker's first batch)."""
        dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate,
                                         multiprocessing_context="spawn" if workers else None)
        t, n, warm = time.perf_counter(), 0, None
        for k, b in enumerate(dl):
            n += len(b[0])
            if k + 1 == max(1, workers):
                warm = (time.perf_counter(), n)
        end = time.perf_counter()
        return n / (end - t), (n - warm[1]) / max(end - warm[0], 1e-9)

    disk, _ = loader_rate(CocoDataset(disk_cfg.out), 0)
    print(f"disk (CocoDataset, 0 workers): {disk:7.2f} img/s")
    for w in (0, 1, 2):
        r, r_s = loader_rate(RenderedDataset(replace(disk_cfg, out=tmp / "unused")), w)
        print(f"RenderedDataset, {w} DataLoader workers: {r:7.2f} img/s incl. start-up, {r_s:7.2f} img/s steady ({r_s / disk:.3f}x disk)")

    # Does rendering on the fly keep up with training? Train fcos_lite (the CPU recipe: batch 8, 256 px crops) for
    # the same number of steps from the files on disk and from RenderedDataset with 2 DataLoader workers, on the same
    # cores: images/s consumed by training (from disk) next to images/s it gets when the renders feed it.
    from simgen.train.engine import resolve_device, train, train_transforms, trainer_config
    from simgen.train.models import build_model, model_config
    from simgen.train.threads import apply_threads

    steps = a.train_steps
    mcfg = model_config(compose_dict("train", ["model=fcos_lite"])["model"])
    tcfg = replace(trainer_config(compose_dict("train", ["trainer=cpu"])["trainer"]), max_steps=steps, max_minutes=None, progress=False,
                   checkpoint_minutes=1e9)
    apply_threads(tcfg.threads)
    tf = train_transforms(tcfg, mcfg.input_size)
    n_cls = len(disk_cfg.scene.categories)

    def train_rate(ds, workers: int) -> float:
        torch.manual_seed(0)
        model = build_model(mcfg, n_cls)
        dl = torch.utils.data.DataLoader(ds, batch_size=tcfg.batch_size, shuffle=workers == 0, num_workers=workers, collate_fn=collate,
                                         multiprocessing_context="spawn" if workers else None, persistent_workers=workers > 0)
        it = iter(dl)
        first = next(it)  # worker start-up is not training speed
        t = time.perf_counter()
        train(model, _chain(first, it, dl), tcfg, resolve_device("cpu"), input_size=mcfg.input_size,
              max_size=mcfg.max_size)
        return steps * tcfg.batch_size / (time.perf_counter() - t)

    def _chain(first, it, dl):
        yield first
        while True:
            for b in it:
                yield b
            it = iter(dl)

    consumed = train_rate(CocoDataset(disk_cfg.out, transforms=tf), 0)
    fed = train_rate(RenderedDataset(replace(disk_cfg, out=tmp / "unused2", n_images=10**6), transforms=tf), 2)
    # Four views of each settled scene: the DataLoader hands a worker consecutive indices, so a batch of 8 is two
    # scenes seen from four cameras each, and physics is paid once per four images
    fed4 = train_rate(RenderedDataset(replace(disk_cfg, out=tmp / "unused3", n_images=10**6, views_per_scene=4), transforms=tf), 2)
    again = train_rate(CocoDataset(disk_cfg.out, transforms=tf), 0)  # the disk rate again: the machine drifts
    consumed = (consumed + again) / 2
    print(f"\n== training fcos_lite ({steps} steps, batch {tcfg.batch_size}, {tcfg.crop} px crops) on these cores")
    print(f"from disk: {consumed:6.2f} img/s consumed (mean of a run before and after);  fed by RenderedDataset (2 workers): "
          f"{fed:6.2f} img/s ({fed / consumed:.2f}x; 1.0 = rendering keeps up); with views_per_scene=4: {fed4:6.2f} img/s "
          f"({fed4 / consumed:.2f}x)")


if __name__ == "__main__":
    main()
