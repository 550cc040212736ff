"""How long `simgen report` takes on a realistic size: N synthetic images (default 2,000, the issue's
target case) against the 50 real dice photos, with the time of every part side by side in one run.

    python benchmarks/report_speed.py [--n 2000] [--features stats random_cnn] [--data DIR] [--real DIR]

Renders the default dice scene into --data once (reused when already complete; rendering is not timed),
then runs the real CLI and prints seconds per report part (from report.json), the total, and the total
as a ratio of the 180 s target. The machine is shared: run it when it is quiet, or read the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 180.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--features", nargs="+", default=["stats", "random_cnn"])
    ap.add_argument("--data", default=None, help="synthetic dataset folder (rendered here when missing)")
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "holdouts" / "dice-real-50"))
    a = ap.parse_args()

    data = Path(a.data or Path(tempfile.gettempdir()) / f"simgen-bench-dice-{a.n}")
    if not (data / "manifest.json").exists():
        print(f"rendering {a.n} dice images into {data} (not timed) ...", flush=True)
        subprocess.run([sys.executable, "-m", "simgen", "render", f"n_images={a.n}", f"out={data}", "width=640", "height=480"],
                       check=True)
    out = Path(tempfile.mkdtemp(prefix="simgen-report-bench-"))
    cmd = [sys.executable, "-m", "simgen", "report", f"data.synthetic={data}", f"data.real={a.real}", f"out={out}/r",
           f"report.features=[{','.join(a.features)}]", "report.fail_on=never"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ})
    wall = time.perf_counter() - t0
    report = json.loads((out / "r" / "report.json").read_text())
    parts = [(s["key"], s["data"].get("seconds", 0.0)) for s in report["sections"]]
    print(f"\nsimgen report: {a.n} synthetic + {report['inputs']['real']['images_sampled']} real images, "
          f"features {', '.join(a.features)}, {os.cpu_count()} cores")
    print(f"{'part':12} {'seconds':>8} {'share':>6}")
    for key, sec in parts:
        print(f"{key:12} {sec:8.1f} {sec / wall:6.1%}")
    print(f"{'load+write':12} {wall - sum(s for _, s in parts):8.1f} {(wall - sum(s for _, s in parts)) / wall:6.1%}")
    print(f"{'total':12} {wall:8.1f}   = {wall / TARGET_S:.2f}x the {TARGET_S:.0f} s target "
          f"({'met' if wall <= TARGET_S else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
