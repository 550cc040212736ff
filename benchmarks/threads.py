"""Training steps/s of fcos_lite on the CPU by thread count and OpenMP wait policy, alone and beside a
competing CPU-busy process, side by side in one run (issue 12: threads=2 collapsed on a shared 2-core machine).

    python benchmarks/threads.py [--seconds 3] [--batch 4] [--crop 256]

Each configuration trains in a fresh process (OpenMP reads OMP_WAIT_POLICY once, when torch loads it) for
``--seconds`` (at least one step; reported: the median step, leaving out the first when there are three) on
random 256 px crops with a few boxes each (the `trainer=cpu` recipe's shapes: fcos_lite, tiny trunk, no
weights; batch 4 rather than 8 so that a collapsed configuration's steps stay short). The competitor is one
Python busy loop, started a second before the trainer so that `threads=auto` can see it. 2-3 minutes in all.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (label, threads, OMP_WAIT_POLICY: None = unset (OpenMP's default), "late" = set only after torch loaded)
CONFIGS = [
    ("threads=2, default policy", "2", None),
    ("threads=2, PASSIVE set after import torch", "2", "late"),
    ("threads=auto, default policy (free cores)", "auto", None),
    ("threads=1, PASSIVE", "1", "PASSIVE"),
    ("threads=2, PASSIVE", "2", "PASSIVE"),
    ("threads=auto, PASSIVE (the simgen CLI's default)", "auto", "PASSIVE"),
]


def worker(threads: str, seconds: float, batch: int, crop: int, late_policy: bool) -> dict:
    import numpy as np
    import torch

    if late_policy:  # too late for OpenMP's runtime, which read its environment when torch loaded
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    from simgen.train.engine import set_model_sizes
    from simgen.train.models import build_model, model_config
    from simgen.train.threads import apply_threads

    choice = apply_threads("auto" if threads == "auto" else int(threads))
    torch.manual_seed(0)
    model = build_model(model_config({"name": "fcos_lite", "trunk": "tiny", "input_size": 416, "max_size": 693, "channels": 64}), 6)
    set_model_sizes(model, 416, 693, crop, training=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def batch_data():
        images = [torch.rand(3, crop, crop, generator=g) for _ in range(batch)]
        targets = []
        for _ in range(batch):
            xy = torch.rand(5, 2, generator=g) * (crop - 60)
            wh = 15 + torch.rand(5, 2, generator=g) * 40
            targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 7, (5,), generator=g)})
        return images, targets

    def step():
        images, targets = batch_data()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    times, t0 = [], time.perf_counter()
    while not times or time.perf_counter() - t0 < seconds:  # a collapsed configuration still ends after one step
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    per_step = float(np.median(times[1:] if len(times) >= 3 else times))  # the first step pays one-off allocations
    return {"threads": choice.threads, "busy_seen": choice.busy_cores, "steps": len(times), "s_per_step": per_step,
            "steps_per_s": 1 / per_step, "policy_env": os.environ.get("OMP_WAIT_POLICY")}


def measure(threads: str, policy: str | None, competitor: bool, a) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy not in (None, "late"):
        env["OMP_WAIT_POLICY"] = policy
    busy = None
    if competitor:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    try:
        cmd = [sys.executable, __file__, "--worker", threads, "--seconds", str(a.seconds), "--batch", str(a.batch), "--crop", str(a.crop)]
        out = subprocess.run(cmd + (["--late-policy"] if policy == "late" else []), env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def _s(r: dict | None) -> str:
    return f"{r['s_per_step']:.2f} ({r['threads']} thr)" if r else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured training time per configuration")
    ap.add_argument("--batch", type=int, default=4, help="4 keeps a collapsed configuration's steps short; the recipe uses 8")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--late-policy", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.seconds, a.batch, a.crop, a.late_policy)))
        return

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} usable cores; 1-min load at start {os.getloadavg()[0]:.2f}; fcos_lite tiny, batch {a.batch}, crop {a.crop}, "
          f"{a.seconds:g} s measured per configuration", flush=True)
    start = time.perf_counter()
    rows = []
    for label, threads, policy in CONFIGS:
        # The late policy only has to be shown to fail where it matters, beside a busy process (saves a slow run).
        alone = None if policy == "late" else measure(threads, policy, False, a)
        shared = measure(threads, policy, True, a)
        rows.append((label, alone, shared))
        print(f"  {label}: alone {_s(alone)} s/step, with a busy neighbour {_s(shared)} s/step", flush=True)
    print("\n| configuration | s/step alone (threads) | s/step beside a busy process (threads) | slowdown | "
          "steps/s beside it vs threads=1 PASSIVE |")
    print("|---|---|---|---|---|")
    ref = next(sh for lb, _, sh in rows if lb.startswith("threads=1"))
    for label, alone, shared in rows:
        slow = f"{shared['s_per_step'] / alone['s_per_step']:.1f}x" if alone else "-"
        print(f"| {label} | {_s(alone)} | {_s(shared)} | {slow} | "
              f"{shared['steps_per_s'] / ref['steps_per_s']:.2f} |")
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
