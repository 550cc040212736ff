"""Dice sim-to-real, end to end on a CPU: render synthetic dice, train on them only (TSTR), score on
the 50 real photos of ``../shared/holdouts/dice-real-50``, print the table.

    python benchmarks/utility_dice.py                   # ~30 min on 2 cores: 2000 images + 20 min training
    python benchmarks/utility_dice.py --minutes 5 --images 500    # a quicker, weaker check
    python benchmarks/utility_dice.py --real <folder>   # adds TRTR and real+synthetic mixes (same budget each)

Everything goes under --work (default /tmp/simgen-bench); a finished render or run is reused.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import simgen

SHARED = Path(os.environ.get("SIMGEN_SHARED", Path(simgen.__file__).resolve().parents[2] / "shared"))


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/simgen-bench")
    ap.add_argument("--images", type=int, default=2000, help="synthetic dice to render")
    ap.add_argument("--minutes", type=float, default=20, help="training budget per run")
    ap.add_argument("--workers", default="2")
    ap.add_argument("--holdout", default=str(SHARED / "holdouts" / "dice-real-50"))
    ap.add_argument("--real", default=None, help="a real *training* folder (never the holdout): adds TRTR and mixes")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    ap.add_argument("extra", nargs="*", help="more simgen utility overrides, e.g. model.trunk=tiny")
    a = ap.parse_args()
    if not (Path(a.holdout) / "annotations.json").is_file():
        sys.exit(f"holdout not found at {a.holdout}; set SIMGEN_SHARED or pass --holdout")
    work = Path(a.work)
    syn = work / f"dice-{a.images}"
    t0 = time.monotonic()
    if not (syn / "manifest.json").is_file():
        run(["simgen", "render", "scene=dice", f"n_images={a.images}", f"out={syn}", f"workers={a.workers}", "width=640", "height=640",
             "seed=0", "progress=false"])
    t_render = time.monotonic() - t0
    out = work / f"utility-{a.images}-{a.minutes:g}min"
    cmd = ["simgen", "utility", "model=fcos_lite", "trainer=cpu", f"trainer.max_minutes={a.minutes}", f"data.synthetic=[{syn}]",
           f"data.holdout={a.holdout}", f"utility.seeds=[{a.seeds}]", f"out={out}"]
    if a.real:
        cmd.append(f"data.real={a.real}")
    run(cmd + list(a.extra))
    report = json.loads((out / "report.json").read_text())
    print(f"\nrender {t_render / 60:.1f} min, total {(time.monotonic() - t0) / 60:.1f} min; report in {out}")
    for r in report["runs"]:
        print(f"{r['name']:>8} seed {r['seed']}: mAP {r['map']:.3f}  AP50 {r['map50']:.3f}  AP50(any class) {r.get('map50_agnostic', float('nan')):.3f}"
              f"  {r['steps']} steps  {r['minutes']:.1f} min")


if __name__ == "__main__":
    main()
